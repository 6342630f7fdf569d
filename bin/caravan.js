#!/usr/bin/env node
// The CLI runs from the compiled package (dist/); a user's TypeScript files are compiled on the
// fly when they are loaded (see src/sdk/loader.ts), so commands that load none start fast.
import { existsSync } from "node:fs";

// `caravan status | head`: a reader that goes away early is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (e) => {
    if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw e;
  });
}
// One file: the CLI's entry with what a status run needs (scripts/bundle-cli.mjs).
const main = new URL("../dist/cli/entry.js", import.meta.url);
if (!existsSync(main)) {
  process.stderr.write(
    "caravan is not built: run `npm run build` in its checkout (npm ci and npm install do it)\n",
  );
  process.exit(1);
}
const { main: run } = await import(main.href);
process.exitCode = await run(process.argv.slice(2));
