import pc from "picocolors";
import { isCaravanError } from "../errors.ts";

/** Colour only on a TTY, and never with NO_COLOR (picocolors checks both for stdout). */
export const color = pc;

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
