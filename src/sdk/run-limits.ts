/**
 * How big a run's arguments and output may be. Both cross process boundaries as JSON and
 * are kept in the control plane's database: a bound keeps one run from filling its memory
 * and slowing every other request. Large data travels by reference (a path, a URL, an
 * object key), not through the run.
 */
import { CaravanError } from "../errors.ts";

/** A run's arguments, as JSON, at most. */
export const MAX_RUN_ARGS_BYTES = 1024 * 1024;
/** A run's output (its task's return value), as JSON, at most. */
export const MAX_RUN_OUTPUT_BYTES = 16 * 1024 * 1024;

/** The size of `value` as JSON, in bytes (UTF-8). */
export function jsonBytes(value: unknown): number {
  return Buffer.byteLength(JSON.stringify(value ?? null) ?? "null");
}

/** `1.5 MiB`, `12.0 KiB`, `300 bytes`. */
export function formatBytes(n: number): string {
  if (n >= 1024 * 1024) return `${(n / (1024 * 1024)).toFixed(1)} MiB`;
  if (n >= 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${n} bytes`;
}

/** Throws `VALIDATION` when a run's arguments are past the bound (say how big and the limit). */
export function checkRunArgs(task: string, args: unknown[]): void {
  const size = jsonBytes(args);
  if (size > MAX_RUN_ARGS_BYTES) {
    throw new CaravanError(
      "VALIDATION",
      `run ${task}: its arguments are ${formatBytes(size)} as JSON, more than the ${formatBytes(MAX_RUN_ARGS_BYTES)} a run takes; pass large data by reference (a file path, a URL, an object key) and read it in the task`,
      { task, bytes: size, limit: MAX_RUN_ARGS_BYTES },
    );
  }
}

/** The error a run fails with when its task returned more than the bound. */
export function outputTooLarge(task: string, bytes: number): { name: string; message: string } {
  return {
    name: "OutputTooLarge",
    message: `the result of ${task} is ${formatBytes(bytes)} as JSON, more than the ${formatBytes(MAX_RUN_OUTPUT_BYTES)} a run may return; store large results elsewhere (a file, an object store) and return where they are`,
  };
}
