import { createRequire } from "node:module";
import { CaravanError, isCaravanError } from "../errors.ts";

/**
 * Colour only on a TTY, and never with NO_COLOR (picocolors checks both for stdout). Required,
 * not imported: importing a CommonJS package makes node scan its source for exports first.
 */
export const color = createRequire(import.meta.url)("picocolors") as typeof import("picocolors");

/** Prints one JSON document on stdout: the only thing `--json` commands write there. */
export function printJSON(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + "\n");
}

export function info(line: string): void {
  process.stderr.write(line + "\n");
}

/** Reports an error on stderr and returns the exit code. */
export function reportError(e: unknown, json = false): number {
  if (isCaravanError(e)) {
    if (json) printJSON({ error: e.toJSON() });
    process.stderr.write(`${color.red("error")} ${color.dim(`[${e.code}]`)} ${e.message}\n`);
    return e.code === "USAGE" ? 2 : 1;
  }
  const err = e as Error;
  if (json) printJSON({ error: { code: "INTERNAL", message: String(err?.message ?? e) } });
  process.stderr.write(`${color.red("internal error")} ${err?.stack ?? String(e)}\n`);
  return 1;
}

/** A commander argument parser for a whole-number option of at least `min`. */
export function wholeNumber(flag: string, min: number): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) {
      throw new CaravanError(
        "USAGE",
        `${flag} must be a whole number >= ${min}, got ${JSON.stringify(value)}`,
      );
    }
    return n;
  };
}

/** A plain table on stdout: a bold header, columns padded to their widest cell. */
export function printTable(head: string[], rows: string[][]): void {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const fmt = (r: string[]) =>
    r
      .map((c, i) => c.padEnd(widths[i]!))
      .join("  ")
      .trimEnd();
  process.stdout.write(color.bold(fmt(head)) + "\n");
  for (const r of rows) process.stdout.write(fmt(r) + "\n");
}
