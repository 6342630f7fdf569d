import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { desiredReplicas, type ScaleInput } from "./scaler.ts";

const NOW = 1_000_000_000;
const base: ScaleInput = {
  min: 0,
  max: 5,
  concurrency: 10,
  scaledownAfterMs: 60_000,
  current: 1,
  inFlight: 0,
  waiting: 0,
  lastActiveAt: NOW,
  lastScaleAt: NOW - 3_600_000,
  now: NOW,
};
const at = (patch: Partial<ScaleInput>) => desiredReplicas({ ...base, ...patch });

describe("desiredReplicas", () => {
  it("wakes a scaled-to-zero app when a request waits", () => {
    expect(at({ current: 0, waiting: 1 })).toBe(1);
    expect(at({ current: 0, waiting: 25 })).toBe(3);
    expect(at({ current: 0 })).toBe(0);
  });

  it("scales out at once to the replicas the load needs, capped at max", () => {
    expect(at({ current: 1, inFlight: 10 })).toBe(1); // exactly at concurrency: enough
    expect(at({ current: 1, inFlight: 11 })).toBe(2);
    expect(at({ current: 2, inFlight: 35, waiting: 5 })).toBe(4);
    expect(at({ current: 2, inFlight: 500 })).toBe(5);
    // Even right after the last change: scaling out has no cool-down.
    expect(at({ current: 1, inFlight: 30, lastScaleAt: NOW })).toBe(3);
  });

  it("scales in one step at a time, only after scaledownAfter without a change", () => {
    expect(at({ current: 4, inFlight: 5 })).toBe(3);
    expect(at({ current: 4, inFlight: 5, lastScaleAt: NOW - 59_999 })).toBe(4);
    expect(at({ current: 3, inFlight: 25 })).toBe(3);
    expect(at({ current: 4, min: 4 })).toBe(4);
  });

  it("goes to zero only when idle for scaledownAfter (and min is 0)", () => {
    expect(at({ current: 1, lastActiveAt: NOW - 60_000 })).toBe(0);
    expect(at({ current: 1, lastActiveAt: NOW - 59_999 })).toBe(1);
    expect(at({ current: 1, inFlight: 1, lastActiveAt: NOW - 600_000 })).toBe(1);
    expect(at({ current: 1, min: 1, lastActiveAt: 0 })).toBe(1);
    expect(at({ current: 1, scaledownAfterMs: 0, lastActiveAt: NOW, lastScaleAt: NOW })).toBe(0);
  });

  it("returns to [min, max] when outside", () => {
    expect(at({ current: 0, min: 2 })).toBe(2);
    expect(at({ current: 8, max: 5, lastScaleAt: NOW })).toBe(5);
  });

  it("always stays within [min, max], and ≥ 1 while a request waits", () => {
    const input = fc
      .record({
        min: fc.nat(5),
        span: fc.nat(5),
        concurrency: fc.integer({ min: 1, max: 100 }),
        scaledownAfterMs: fc.nat(1_000_000),
        current: fc.nat(12),
        inFlight: fc.nat(1000),
        waiting: fc.nat(50),
        sinceActive: fc.nat(2_000_000),
        sinceScale: fc.nat(2_000_000),
      })
      .map(({ span, sinceActive, sinceScale, ...r }) => ({
        ...r,
        max: r.min + span,
        lastActiveAt: NOW - sinceActive,
        lastScaleAt: NOW - sinceScale,
        now: NOW,
      }));
    fc.assert(
      fc.property(input, (i) => {
        const n = desiredReplicas(i);
        expect(Number.isInteger(n)).toBe(true);
        expect(n).toBeGreaterThanOrEqual(i.min);
        expect(n).toBeLessThanOrEqual(i.max);
        if (i.waiting > 0 && i.max >= 1) expect(n).toBeGreaterThanOrEqual(1);
        // Scaling in is one step at a time.
        if (n < i.current && i.current <= i.max) expect(n).toBe(i.current - 1);
      }),
      { numRuns: 2000 },
    );
  });
});
