#!/usr/bin/env node
// The CLI is written in TypeScript; tsx compiles it (and the user's files) on the fly.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
