/**
 * Code snapshots: the user's entry file bundled with esbuild into an immutable,
 * content-addressed directory. Packages from node_modules stay external (resolved from the
 * project at run time); the user's own files are frozen, so editing them after a deploy
 * changes nothing until the next one.
 */
import {
  existsSync,
  mkdirSync,
  readFileSync,
  renameSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { build, stop as stopEsbuild, type Metafile, type Plugin } from "esbuild";
import { CaravanError } from "../errors.ts";
import { isAppEnvironment, type Environment } from "../sdk/environment.ts";
import { sha256 } from "../sdk/stable.ts";
import type { CodeRef } from "./contract.ts";
import { PACKAGE_NAMES, PUBLIC_ENTRIES, buildRuntime, runtimeMainOf } from "./runtime-build.ts";

export interface Snapshot {
  code: CodeRef;
  /** Hash of the code an environment can reach: its declaring file and what that imports. */
  codeHashOf(env: Environment): string;
  /** The code an environment runs: `code`, with its own module's bundle when it has one. */
  codeOf(env: Environment): CodeRef;
  /** Every file bundled (absolute paths): what the code hashes cover. */
  sources: string[];
}

/**
 * Imports of this package (`caravan-deploy`, or `caravan`) point at the compiled runtime the app
 * will run in, so the app and the runtime share one SDK (one registry, one runtime context)
 * with no resolution hooks.
 */
function caravanImports(runtimeDir: string): Plugin {
  return {
    name: "caravan-runtime",
    setup(b) {
      b.onResolve({ filter: /^caravan(-deploy)?(\/[a-z]+)?$/ }, (args) => {
        const [name, ...rest] = args.path.split("/");
        if (!PACKAGE_NAMES.includes(name!)) return undefined;
        const target = PUBLIC_ENTRIES[rest.join("/")];
        return target ? { path: join(runtimeDir, `${target}.js`), external: true } : undefined;
      });
    },
  };
}

/** The nearest `node_modules` above `dir`: the snapshot's packages resolve from there. */
function nearestNodeModules(dir: string): string | undefined {
  for (let d = dir; ; d = dirname(d)) {
    if (existsSync(join(d, "node_modules"))) return join(d, "node_modules");
    if (dirname(d) === d) return undefined;
  }
}

/**
 * The module an app is bundled from on its own (see `CodeRef.ownEntry`): the file that
 * declares it, when evaluating that file is what declares it and gives it its server and hooks
 * (`AppEnvironment.ownModule`), and it is not the entry (whose bundle is `entry.js` already). JS apps only: a command app runs no bundle, and a task
 * environment's tasks may be registered by other modules (`env.task` in a file importing it).
 */
function ownModuleOf(env: Environment, entry: string): string | undefined {
  const own = isAppEnvironment(env) ? env.ownModule : undefined;
  if (own === undefined) return undefined;
  const file = resolve(own);
  return file === entry ? undefined : file;
}

/** The output name of a module's own bundle: stable, and unique per source path. */
const ownBundleName = (workDir: string, file: string) =>
  `env-${sha256(relative(workDir, file)).slice(0, 12)}`;

/**
 * Bundles `entryFile` (and, given the environments deployed, each app's own module on its own:
 * see `CodeRef.ownEntry`) into content-addressed directories under `paths.bundles`.
 */
export async function snapshotCode(
  entryFile: string,
  paths: { bundles: string; runtime: string },
  environments: Environment[] = [],
): Promise<Snapshot> {
  const entry = resolve(entryFile);
  const workDir = dirname(entry);
  const runtimeDir = await buildRuntime(paths.runtime);
  const ownModules = [
    ...new Set(environments.map((e) => ownModuleOf(e, entry)).filter((f) => f !== undefined)),
  ];
  let result;
  // Snapshots are rare: stop esbuild's service process afterwards rather than keep it alive
  // beside a long-running caller (a serve session must leave nothing behind).
  try {
    result = await build({
      entryPoints: [
        { in: entry, out: "entry" },
        ...ownModules.map((file) => ({ in: file, out: ownBundleName(workDir, file) })),
      ],
      absWorkingDir: workDir,
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      // Bundling may rename a function that shares a name with another binding (a task
      // declared as `export const train = env.task(async function train ...)`); keep `.name`,
      // which task names default to.
      keepNames: true,
      packages: "external",
      plugins: [caravanImports(runtimeDir)],
      sourcemap: "linked",
      metafile: true,
      write: false,
      outdir: "out",
      logLevel: "silent",
    });
  } catch (e) {
    const errors =
      (e as { errors?: { text: string; location?: { file: string; line: number } }[] }).errors ??
      [];
    const first = errors[0];
    const where = first?.location ? `${first.location.file}:${first.location.line}: ` : "";
    throw new CaravanError(
      "BUNDLE_FAILED",
      `could not snapshot ${entryFile}: ${where}${first?.text ?? (e as Error).message}`,
      { file: entry },
    );
  } finally {
    await stopEsbuild();
  }

  const files = result.outputFiles.map((f) => ({ name: basename(f.path), contents: f.contents }));
  const isEntry = (f: { name: string }) => /^entry\.js(\.map)?$/.test(f.name);
  const nodeModules = nearestNodeModules(workDir);
  // The entry's bundle alone in its directory, as before there were own bundles (a cluster's
  // code ConfigMap holds that directory); the modules' own bundles share one beside it.
  const { hash, dir } = writeContentAddressed(paths.bundles, files.filter(isEntry), nodeModules);
  const own = files.some((f) => !isEntry(f))
    ? writeContentAddressed(
        paths.bundles,
        files.filter((f) => !isEntry(f)),
        nodeModules,
      ).dir
    : undefined;
  const code: CodeRef = {
    hash,
    entry: join(dir, "entry.js"),
    sourceRoot: workDir,
    runtime: runtimeMainOf(runtimeDir),
  };
  const closureHash = closureHasher(result.metafile, workDir);
  const entryInputs = new Set(
    Object.entries(result.metafile.outputs)
      .filter(([out]) => /(^|\/)entry\.js$/.test(out))
      .flatMap(([, output]) => Object.keys(output.inputs))
      .map((input) => resolve(workDir, input)),
  );
  return {
    code,
    codeHashOf: (env) => (env.declaredAt && closureHash(env.declaredAt.file)) || hash,
    codeOf: (env) => {
      const file = own && ownModuleOf(env, entry);
      // Only a module the entry imports: a stack frame can name another file (a source map's).
      return file && entryInputs.has(file)
        ? { ...code, ownEntry: join(own, `${ownBundleName(workDir, file)}.js`) }
        : code;
    },
    sources: Object.keys(result.metafile.inputs).map((input) => resolve(workDir, input)),
  };
}

/**
 * Writes files into `<baseDir>/<hash of their names and contents>/`, atomically (a rename),
 * once: an existing directory with that hash already holds the same files.
 */
export function writeContentAddressed(
  baseDir: string,
  files: { name: string; contents: Uint8Array }[],
  nodeModules?: string,
): { hash: string; dir: string } {
  const hash = sha256(
    nodeModules ?? "",
    ...files.flatMap((f) => [f.name, Buffer.from(f.contents).toString("base64")]),
  ).slice(0, 16);
  const dir = join(baseDir, hash);
  if (!existsSync(dir)) {
    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    for (const f of files) {
      mkdirSync(dirname(join(tmp, f.name)), { recursive: true });
      writeFileSync(join(tmp, f.name), f.contents);
    }
    if (nodeModules) symlinkSync(nodeModules, join(tmp, "node_modules"), "dir");
    try {
      renameSync(tmp, dir);
    } catch {
      rmSync(tmp, { recursive: true, force: true }); // written meanwhile by another deploy
    }
  }
  return { hash, dir };
}

/** Hashes, per source file, the contents of everything it imports transitively. */
function closureHasher(meta: Metafile, workDir: string): (file: string) => string | undefined {
  const cache = new Map<string, string>();
  const contents = new Map<string, string>();
  // Each file is read and hashed once, however many environments reach it.
  const contentHash = (input: string) => {
    let h = contents.get(input);
    if (h === undefined)
      contents.set(input, (h = sha256(readFileSync(resolve(workDir, input), "utf8"))));
    return h;
  };
  return (file: string) => {
    const key = relative(workDir, file);
    if (!meta.inputs[key]) return undefined;
    const cached = cache.get(key);
    if (cached) return cached;
    const seen = new Set<string>();
    const stack = [key];
    while (stack.length) {
      const input = stack.pop()!;
      if (seen.has(input) || !meta.inputs[input]) continue;
      seen.add(input);
      for (const imp of meta.inputs[input]!.imports) if (!imp.external) stack.push(imp.path);
    }
    const hash = sha256(...[...seen].sort().map((i) => `${i}:${contentHash(i)}`));
    cache.set(key, hash);
    return hash;
  };
}
