import { describe, expect, it } from "vitest";
import { normalizeResources, parseCpu, parseMemory } from "./resources.ts";
import { errorOf } from "../test-helpers.ts";

const WHERE = 'AppEnvironment "api"';

describe("cpu", () => {
  it.each([
    [1, 1000],
    [0.5, 500],
    [2.25, 2250],
    ["2", 2000],
    ["0.1", 100],
    ["500m", 500],
    ["1m", 1],
    ["1500m", 1500],
  ])("reads %j as %d millicores", (cpu, milli) => {
    expect(parseCpu(cpu, WHERE)).toBe(milli);
  });

  it.each([0, -1, NaN, Infinity, "", "abc", "500x", "-1", "0m", "1.5.2", "1 m", "1M", null])(
    "rejects %j, naming the value and the accepted forms",
    (cpu) => {
      const err = errorOf(() => parseCpu(cpu, WHERE));
      expect(err.code).toBe("INVALID_RESOURCES");
      expect(err.message).toContain(WHERE);
      expect(err.message).toContain("resources.cpu");
      expect(err.message).toContain("is not a CPU quantity");
      expect(err.message).toContain('"500m"');
    },
  );

  it("shows a string value quoted in the message", () => {
    expect(errorOf(() => parseCpu("lots", WHERE)).message).toContain('resources.cpu "lots"');
  });
});

describe("memory", () => {
  it.each([
    ["512Mi", 512 * 1024 ** 2],
    ["1Gi", 1024 ** 3],
    ["1.5Gi", 1.5 * 1024 ** 3],
    ["64Ki", 64 * 1024],
    ["1Ti", 1024 ** 4],
    ["1G", 1e9],
    ["250M", 250e6],
    ["1k", 1000],
    ["1K", 1000],
    ["1000000", 1e6],
  ])("reads %s as %d bytes", (memory, bytes) => {
    expect(parseMemory(memory, WHERE)).toBe(bytes);
  });

  it.each([512, "512MB", "1gi", "Gi", "", "0Mi", "-1Gi", "1 Gi", "1e9", undefined])(
    "rejects %j, naming the value and the rule",
    (memory) => {
      const err = errorOf(() => parseMemory(memory, WHERE));
      expect(err.code).toBe("INVALID_RESOURCES");
      expect(err.message).toContain(WHERE);
      expect(err.message).toContain("resources.memory");
      expect(err.message).toContain("is not a memory quantity");
      expect(err.message).toContain('"512Mi"');
    },
  );

  it("tells a number from a string in the message", () => {
    expect(errorOf(() => parseMemory(512, WHERE)).message).toContain("resources.memory 512 is");
    expect(errorOf(() => parseMemory("512MB", WHERE)).message).toContain(
      'resources.memory "512MB" is',
    );
  });
});

describe("normalizeResources", () => {
  it("returns undefined when nothing is asked", () => {
    expect(normalizeResources(undefined, WHERE)).toBeUndefined();
  });

  it("converts to base units", () => {
    expect(normalizeResources({ cpu: "500m", memory: "1Gi", gpu: 1 }, WHERE)).toEqual({
      milliCpu: 500,
      memoryBytes: 1024 ** 3,
      gpu: 1,
    });
    expect(normalizeResources({}, WHERE)).toEqual({});
  });

  it("gives equal results for equal quantities written differently", () => {
    expect(normalizeResources({ cpu: 0.5 }, WHERE)).toEqual(
      normalizeResources({ cpu: "500m" }, WHERE),
    );
    expect(normalizeResources({ memory: "1024Mi" }, WHERE)).toEqual(
      normalizeResources({ memory: "1Gi" }, WHERE),
    );
  });

  it("rejects an unknown resource", () => {
    const err = errorOf(() => normalizeResources({ cpu: 1, disk: "10Gi" }, WHERE));
    expect(err.code).toBe("INVALID_RESOURCES");
    expect(err.message).toContain("resources.disk is not a resource; use cpu, memory or gpu");
  });

  it.each([1.5, -1, "1"])("rejects gpu %j", (gpu) => {
    const err = errorOf(() => normalizeResources({ gpu }, WHERE));
    expect(err.code).toBe("INVALID_RESOURCES");
    expect(err.message).toContain("resources.gpu must be a whole number of GPUs");
  });

  it.each([
    ["1 cpu", '"1 cpu"'],
    [[1], "[1]"],
    [null, "null"],
  ])("rejects resources that are not an object (%j)", (res, shown) => {
    const err = errorOf(() => normalizeResources(res, WHERE));
    expect(err.code).toBe("INVALID_RESOURCES");
    expect(err.message).toContain(`resources must be an object like`);
    expect(err.message).toContain(`got ${shown}`);
  });
});
