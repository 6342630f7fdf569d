import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeEach, describe, expect, it } from "vitest";
import { CaravanError } from "../errors.ts";
import { findConfigFile, init, loadConfig, validateConfig } from "./config.ts";
import { shared } from "./global.ts";

const roots: string[] = [];
let root: string;

/** A fresh directory tree for each test; the files are written by the test. */
beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "caravan-config-test-"));
  roots.push(root);
});

afterEach(() => {
  delete shared().config;
});

afterAll(() => {
  for (const dir of roots) rmSync(dir, { recursive: true, force: true });
});

function write(relative: string, text: string): string {
  const file = join(root, relative);
  mkdirSync(join(file, ".."), { recursive: true });
  writeFileSync(file, text);
  return file;
}

function dir(relative: string): string {
  const d = join(root, relative);
  mkdirSync(d, { recursive: true });
  return d;
}

async function configError(promise: Promise<unknown>): Promise<CaravanError> {
  try {
    await promise;
  } catch (e) {
    if (e instanceof CaravanError) return e;
    throw e;
  }
  throw new Error("expected a CaravanError, but nothing was thrown");
}

describe("config file discovery", () => {
  it("finds nothing when no directory up to / has a config file", () => {
    expect(findConfigFile(dir("a/b"))).toBeUndefined();
  });

  it.each([
    "caravan.config.json",
    "caravan.config.yaml",
    "caravan.config.yml",
    "caravan.config.ts",
  ])("finds %s from a directory several levels below", (name) => {
    const file = write(name, "");
    expect(findConfigFile(dir("a/b/c"))).toBe(file);
    expect(findConfigFile(root)).toBe(file);
  });

  it("takes the nearest file, not the topmost", () => {
    write("caravan.config.json", "{}");
    const near = write("a/caravan.config.yaml", "");
    expect(findConfigFile(dir("a/b"))).toBe(near);
  });

  it("prefers .ts, then .json, then .yaml in one directory", () => {
    write("caravan.config.yaml", "");
    const json = write("caravan.config.json", "{}");
    expect(findConfigFile(root)).toBe(json);
    const ts = write("caravan.config.ts", "export default {};\n");
    expect(findConfigFile(root)).toBe(ts);
  });
});

describe("loadConfig", () => {
  it("defaults to project default, domain development, local backend", async () => {
    expect(await loadConfig(dir("empty"))).toEqual({
      project: "default",
      domain: "development",
      backend: "local",
    });
  });

  it("reads a JSON file found upwards", async () => {
    const file = write(
      "caravan.config.json",
      JSON.stringify({ project: "shop", domain: "staging", controlPlane: "http://127.0.0.1:7070" }),
    );
    expect(await loadConfig(dir("services/api"))).toEqual({
      project: "shop",
      domain: "staging",
      backend: "local",
      controlPlane: "http://127.0.0.1:7070",
      file,
    });
  });

  it("reads a YAML file", async () => {
    const file = write("caravan.config.yaml", "project: shop\nbackend: kubernetes\n");
    expect(await loadConfig(root)).toEqual({
      project: "shop",
      domain: "development",
      backend: "kubernetes",
      file,
    });
  });

  it("reads a TypeScript file's default export", async () => {
    const file = write(
      "caravan.config.ts",
      'const project: string = "from-ts";\nexport default { project, domain: "prod" };\n',
    );
    expect(await loadConfig(dir("x"))).toEqual({
      project: "from-ts",
      domain: "prod",
      backend: "local",
      file,
    });
  });

  it("treats an empty YAML file as no settings", async () => {
    const file = write("caravan.config.yml", "");
    expect(await loadConfig(root)).toMatchObject({ project: "default", file });
  });

  it("lets overrides win over the file", async () => {
    write("caravan.config.json", JSON.stringify({ project: "shop", domain: "staging" }));
    expect(await loadConfig(root, { project: "other" })).toMatchObject({
      project: "other",
      domain: "staging",
    });
    expect(await loadConfig(root, { project: undefined, domain: "prod" })).toMatchObject({
      project: "shop",
      domain: "prod",
    });
  });

  it("rejects an override that is not a DNS-1123 label (USAGE)", async () => {
    const err = await configError(loadConfig(root, { project: "My Project" }));
    expect(err.code).toBe("USAGE");
    expect(err.message).toContain('--project "My Project"');
    expect(err.message).toContain("DNS-1123");
  });
});

describe("malformed config files", () => {
  it("names the file when JSON does not parse", async () => {
    const file = write("caravan.config.json", '{ "project": "shop", }');
    const err = await configError(loadConfig(dir("deep/er")));
    expect(err.code).toBe("CONFIG");
    expect(err.message).toContain(file);
    expect(err.message).toContain("cannot be read");
    expect(err.details.file).toBe(file);
  });

  it("names the file when YAML does not parse", async () => {
    const file = write("caravan.config.yaml", "project: [shop\n");
    const err = await configError(loadConfig(root));
    expect(err.code).toBe("CONFIG");
    expect(err.message).toContain(file);
    expect(err.message).toContain("cannot be read");
  });

  it("names the file when a TypeScript config throws", async () => {
    const file = write("caravan.config.ts", 'throw new Error("boom in config");\n');
    const err = await configError(loadConfig(root));
    expect(err.code).toBe("CONFIG");
    expect(err.message).toContain(file);
    expect(err.message).toContain("boom in config");
  });

  it.each([
    ["project", "My_Shop", 'must be a DNS-1123 label like "my-project"'],
    ["domain", 42, 'must be a DNS-1123 label like "my-project"'],
    ["backend", "docker", 'must be "local" or "kubernetes"'],
    ["controlPlane", "127.0.0.1:7070", 'must be a URL like "http://127.0.0.1:7070"'],
    [
      "projcet",
      "shop",
      "is not a caravan setting (known: project, domain, backend, controlPlane, kubernetes, telemetry, warmPool)",
    ],
    ["telemetry", { tracing: "no" }, ".tracing must be true or false"],
    ["telemetry", { maxSpans: 0 }, ".maxSpans must be a whole number >= 1"],
    [
      "telemetry",
      { maxAge: 1 },
      ".maxAge is not a telemetry setting (known: tracing, maxSpans, maxLogRecords, maxMetricPoints, maxAgeHours)",
    ],
    [
      "kubernetes",
      { otlpEndpoint: "collector:4318" },
      '.otlpEndpoint must be a URL like "http://otel-collector.observability:4318"',
    ],
    ["warmPool", { size: 65 }, ".size must be a whole number from 0 to 64"],
    [
      "warmPool",
      { preload: "fastify" },
      '.preload must be false or a list of package names like ["fastify"]',
    ],
    ["warmPool", { sise: 2 }, 'has an unknown field "sise" (known: size, preload)'],
  ])("names the file, the field %s, the bad value and the rule", async (field, value, rule) => {
    const file = write("caravan.config.json", JSON.stringify({ [field]: value }));
    const err = await configError(loadConfig(root));
    expect(err.code).toBe("CONFIG");
    expect(err.message).toBe(`${file}: field "${field}" ${rule}, got ${JSON.stringify(value)}`);
    expect(err.details).toEqual({ file, field });
  });

  it("names the field in YAML too", async () => {
    const file = write("caravan.config.yaml", "project: shop\ndomain: Prod Env\n");
    const err = await configError(loadConfig(root));
    expect(err.message).toContain(file);
    expect(err.message).toContain('field "domain"');
    expect(err.message).toContain('"Prod Env"');
  });

  it.each([
    ["[1, 2]", "[1,2]"],
    ['"shop"', '"shop"'],
  ])("rejects a file whose content is not an object (%s)", async (text, shown) => {
    const file = write("caravan.config.json", text);
    const err = await configError(loadConfig(root));
    expect(err.code).toBe("CONFIG");
    expect(err.message).toContain(file);
    expect(err.message).toContain(`expected an object with project, domain`);
    expect(err.message).toContain(`got ${shown}`);
  });

  it("reads telemetry settings and a cluster's OTLP collector", async () => {
    write(
      "caravan.config.json",
      JSON.stringify({
        telemetry: { tracing: false, maxSpans: 500, maxAgeHours: 0.5 },
        kubernetes: { otlpEndpoint: "http://otel-collector.observability:4318" },
      }),
    );
    expect(await loadConfig(root)).toMatchObject({
      telemetry: { tracing: false, maxSpans: 500, maxAgeHours: 0.5 },
      kubernetes: { otlpEndpoint: "http://otel-collector.observability:4318" },
    });
  });

  it("reads warmPool: off, a size, pinned or no preloads", async () => {
    write("off/caravan.config.json", JSON.stringify({ warmPool: false }));
    expect((await loadConfig(join(root, "off"))).warmPool).toBe(false);
    const pinned = { size: 8, preload: ["fastify", "@hono/node-server"] };
    write("pinned/caravan.config.json", JSON.stringify({ warmPool: pinned }));
    expect((await loadConfig(join(root, "pinned"))).warmPool).toEqual(pinned);
    write("none/caravan.config.json", JSON.stringify({ warmPool: { preload: false } }));
    expect((await loadConfig(join(root, "none"))).warmPool).toEqual({ preload: false });
    expect((await loadConfig(dir("unset"))).warmPool).toBeUndefined();
  });

  it("validateConfig accepts null as no settings", () => {
    expect(validateConfig(null, "x.json")).toEqual({});
  });
});

describe("init", () => {
  it("reads the config from rootDir and makes it the default for later loads", async () => {
    write("caravan.config.json", JSON.stringify({ project: "shop", domain: "staging" }));
    const config = await init({ rootDir: root });
    expect(config).toMatchObject({ project: "shop", domain: "staging" });
    expect(shared().config).toEqual({ rootDir: root, project: "shop", domain: "staging" });
    // Another directory without a file still sees what init() set.
    const elsewhere = mkdtempSync(join(tmpdir(), "caravan-config-test-"));
    roots.push(elsewhere);
    expect(await loadConfig(elsewhere)).toMatchObject({ project: "shop", domain: "staging" });
  });

  it("lets init's project/domain win over the file, and overrides win over init", async () => {
    write("caravan.config.json", JSON.stringify({ project: "shop", domain: "staging" }));
    expect(await init({ rootDir: root, domain: "prod" })).toMatchObject({
      project: "shop",
      domain: "prod",
    });
    expect(await loadConfig(root)).toMatchObject({ project: "shop", domain: "prod" });
    expect(await loadConfig(root, { project: "qa", domain: "qa" })).toMatchObject({
      project: "qa",
      domain: "qa",
    });
  });

  it("forgets an earlier init's settings when called again", async () => {
    await init({ rootDir: root, project: "first" });
    expect(await init({ rootDir: dir("other") })).toMatchObject({ project: "default" });
  });
});
