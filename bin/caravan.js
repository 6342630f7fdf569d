#!/usr/bin/env node
// The CLI is written in TypeScript; tsx compiles it (and the user's files) on the fly.
import { register } from "tsx/esm/api";

register();
// `caravan status | head`: a reader that goes away early is not an error.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (e) => {
    if (e.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw e;
  });
}
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
