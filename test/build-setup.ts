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

function newestSource(dir: string, pattern = /\.ts$/): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path, pattern));
    else if (pattern.test(entry.name)) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

/** The web console (console/, built by Vite into dist/console) when a source of it is newer. */
function buildConsole(): void {
  const index = join(ROOT, "dist/console/index.html");
  const built = existsSync(index) ? statSync(index).mtimeMs : 0;
  if (built >= newestSource(join(ROOT, "console"), /\.(tsx?|css|html)$/)) return;
  execFileSync(
    process.execPath,
    [join(ROOT, "node_modules/vite/bin/vite.js"), "build", "--config", "console/vite.config.ts"],
    { cwd: ROOT, stdio: "inherit" },
  );
}

export default function setup(): void {
  buildConsole();
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
  // The CLI's entry bundles modules tsc may just have rewritten.
  execFileSync(process.execPath, [join(ROOT, "scripts/bundle-cli.mjs")], {
    cwd: ROOT,
    stdio: "inherit",
  });
  // An incremental build that changed nothing leaves its stamp as it was.
  const now = new Date();
  utimesSync(STAMP, now, now);
}
