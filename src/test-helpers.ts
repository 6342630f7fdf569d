// Helpers shared by the unit tests (not part of the package's API).
import { CaravanError } from "./errors.ts";

/** Runs `fn`, which must throw a CaravanError, and returns that error. */
export function errorOf(fn: () => unknown): CaravanError {
  try {
    fn();
  } catch (e) {
    if (e instanceof CaravanError) return e;
    throw e;
  }
  throw new Error("expected a CaravanError, but nothing was thrown");
}

/** The line of the file that called it. */
export function callerLine(): number {
  const frame = new Error().stack!.split("\n")[2]!;
  return Number(/:(\d+):\d+\)?$/.exec(frame)![1]);
}
