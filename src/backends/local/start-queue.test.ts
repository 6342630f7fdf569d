import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { START_LIMIT_ENV, StartQueue, defaultStartLimit } from "./start-queue.ts";

const tick = () => new Promise((r) => setImmediate(r));

describe("StartQueue", () => {
  it("hands out at most `limit` slots; the next waiter gets a released one, in order", async () => {
    const q = new StartQueue(2);
    const got: number[] = [];
    const releases: (() => void)[] = [];
    for (let i = 0; i < 5; i++)
      void q.acquire().then((release) => {
        got.push(i);
        releases[i] = release;
      });
    await tick();
    expect(got).toEqual([0, 1]);
    expect(q.stats()).toMatchObject({ active: 2, waiting: 3, peak: 2, total: 2 });
    releases[1]!();
    releases[1]!(); // idempotent: one slot back, not two
    await tick();
    expect(got).toEqual([0, 1, 2]);
    expect(q.stats()).toMatchObject({ active: 2, waiting: 2 });
    releases[0]!();
    releases[2]!();
    await tick();
    expect(got).toEqual([0, 1, 2, 3, 4]);
    releases[3]!();
    releases[4]!();
    expect(q.stats()).toEqual({ limit: 2, active: 0, waiting: 0, peak: 2, total: 5 });
  });

  it("run() releases its slot when the work fails", async () => {
    const q = new StartQueue(1);
    await expect(q.run(() => Promise.reject(new Error("boom")))).rejects.toThrow("boom");
    await expect(q.run(async () => 7)).resolves.toBe(7);
    expect(q.stats()).toMatchObject({ active: 0, total: 2 });
  });

  it("never runs more than the limit at once, and runs everything (any limit, any durations)", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 6 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 40 }),
        async (limit, ticks) => {
          const q = new StartQueue(limit);
          let now = 0;
          let most = 0;
          let done = 0;
          await Promise.all(
            ticks.map((n) =>
              q.run(async () => {
                most = Math.max(most, ++now);
                for (let i = 0; i < n; i++) await tick();
                now--;
                done++;
              }),
            ),
          );
          // The queue counts slots held (granted, maybe not yet running): at least as many.
          expect(most).toBeLessThanOrEqual(q.stats().peak);
          expect(q.stats().peak).toBeLessThanOrEqual(limit);
          expect(done).toBe(ticks.length);
          expect(q.stats()).toMatchObject({ active: 0, waiting: 0, total: ticks.length });
        },
      ),
      { numRuns: 50 },
    );
  });

  it("defaults to 3 starts per core, at least 4; the variable overrides it", () => {
    expect(defaultStartLimit({}, 1)).toBe(4);
    expect(defaultStartLimit({}, 2)).toBe(6);
    expect(defaultStartLimit({}, 16)).toBe(48);
    expect(defaultStartLimit({ [START_LIMIT_ENV]: "2" }, 16)).toBe(2);
    expect(defaultStartLimit({ [START_LIMIT_ENV]: "0" }, 2)).toBe(6); // not a bound: ignored
    expect(defaultStartLimit({ [START_LIMIT_ENV]: "x" }, 2)).toBe(6);
    expect(() => new StartQueue(0)).toThrow("positive integer");
  });
});
