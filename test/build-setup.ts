/**
 * Vitest global setup: the CLI runs from the compiled package (dist/), so integration tests
 * need it current. Compiles when a source file is newer than the last build (incremental, so a
 * rebuild after an edit takes seconds); `npm test` builds first anyway.
 */
import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, statSync, utimesSync } from "node:fs";
import { join } from "node:path";
import { ROOT } from "./helpers.ts";

const STAMP = join(ROOT, "dist/.tsbuildinfo");

function newestSource(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith(".ts")) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

export default function setup(): void {
  const built = existsSync(STAMP) ? statSync(STAMP).mtimeMs : 0;
  if (built >= newestSource(join(ROOT, "src"))) return;
  execFileSync(
    process.execPath,
    [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", "tsconfig.build.json"],
    {
      cwd: ROOT,
      stdio: "inherit",
    },
  );
  // An incremental build that changed nothing leaves its stamp as it was.
  const now = new Date();
  utimesSync(STAMP, now, now);
}
