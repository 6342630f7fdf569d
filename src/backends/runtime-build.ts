/**
 * Compiles caravan's runtime (and the public entry points the user's code imports) to plain
 * JavaScript once, into `$CARAVAN_HOME/runtime/<hash>/`, so an app process starts with
 * `node main.js` and pays no TypeScript compiler and no module-resolution hooks at start-up.
 * Layout: `runtime/main.js`, `public/<entry>.js`, `chunks/`, and a `node_modules` link to
 * the directory caravan's own dependencies are installed in.
 */
import { basename, dirname, extname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { GATEWAY_ENTRY } from "./kubernetes/cluster-gateway.ts";
import { GATEWAY_PROCESS_ENTRY } from "./local/gateway-process/entry.ts";
import { writeContentAddressed } from "./snapshot.ts";

const SRC = dirname(dirname(fileURLToPath(import.meta.url)));
const SOURCE_EXT = extname(fileURLToPath(import.meta.url));

/** The public entry points, by their path under the package's name (`caravan-deploy/<path>`). */
export const PUBLIC_ENTRIES: Record<string, string> = {
  "": "public/index",
  fastify: "public/fastify",
  hono: "public/hono",
  express: "public/express",
  runtime: "public/runtime",
};

/** The package's name; `caravan` is accepted too (see sdk/alias-hooks.ts). */
export const PACKAGE_NAMES = ["caravan-deploy", "caravan"];

const built = new Map<string, Promise<string>>();

/** Directory of the compiled runtime (built at most once per process and directory). */
export function buildRuntime(runtimeDir: string): Promise<string> {
  let dir = built.get(runtimeDir);
  if (!dir) built.set(runtimeDir, (dir = compile(runtimeDir)));
  return dir;
}

export function runtimeMainOf(dir: string): string {
  return join(dir, "runtime/main.js");
}

/**
 * The `node_modules` directory caravan's dependencies resolve from: the one caravan itself is
 * installed in (where npm hoists them), or a checkout's own. Found from caravan's place, not
 * from where one dependency resolves (a project with its own esbuild nests caravan's copy).
 */
function dependenciesDir(): string {
  const root = dirname(SRC);
  return basename(dirname(root)) === "node_modules" ? dirname(root) : join(root, "node_modules");
}

async function compile(runtimeDir: string): Promise<string> {
  // The cluster gateway's process runs from the same bundle (a pod mounts it with the
  // runtime); so does the local gateway process when caravan runs from its sources (compiled,
  // it starts from dist/).
  const entries = [
    "runtime/main",
    GATEWAY_ENTRY,
    ...(SOURCE_EXT === ".ts" ? [GATEWAY_PROCESS_ENTRY] : []),
    ...Object.values(PUBLIC_ENTRIES),
  ];
  const result = await build({
    // From the sources (.ts) in a checkout run through tsx, from dist/ (.js) in the package.
    entryPoints: Object.fromEntries(entries.map((e) => [e, join(SRC, `${e}${SOURCE_EXT}`)])),
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
  return writeContentAddressed(runtimeDir, files, dependenciesDir()).dir;
}
