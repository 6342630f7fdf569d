/**
 * Compiles caravan's runtime (and the public entry points the user's code imports) to plain
 * JavaScript once, into `$CARAVAN_HOME/runtime/<hash>/`, so an app process starts with
 * `node main.js` and pays no TypeScript compiler at start-up.
 */
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { writeContentAddressed } from "../snapshot.ts";

const SRC = dirname(dirname(dirname(fileURLToPath(import.meta.url))));
/** The package root: caravan's own dependencies resolve from here. */
export const CARAVAN_ROOT = dirname(SRC);

let built: Promise<string> | undefined;

/** Path of the compiled runtime's main module (built at most once per process). */
export function runtimeMain(runtimeDir: string): Promise<string> {
  built ??= buildRuntime(runtimeDir);
  return built;
}

async function buildRuntime(runtimeDir: string): Promise<string> {
  const entries = [
    "runtime/main",
    "runtime/hooks",
    "public/index",
    "public/fastify",
    "public/hono",
    "public/express",
    "public/runtime",
  ];
  const result = await build({
    entryPoints: Object.fromEntries(entries.map((e) => [e, join(SRC, `${e}.ts`)])),
    bundle: true,
    splitting: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    outdir: "/out",
    chunkNames: "chunks/[name]-[hash]",
    write: false,
    logLevel: "silent",
  });
  const files = result.outputFiles.map((f) => ({
    name: relative("/out", f.path),
    contents: f.contents,
  }));
  const { dir } = writeContentAddressed(runtimeDir, files);
  return join(dir, "runtime/main.js");
}
