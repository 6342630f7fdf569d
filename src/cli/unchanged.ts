/**
 * An unchanged `caravan deploy` without importing the user's code. Importing it (TypeScript
 * through tsx, the frameworks it loads) and snapshotting it with esbuild cost ten times what
 * node takes to start, only to find that every revision is the one already deployed.
 *
 * So after a deploy in which every environment came out ready or unchanged, the CLI records
 * what that result was computed from: the contents of every file the code snapshot covered, of
 * the config file and of the files the user's code read with `fs` while it loaded (or that they
 * did not exist), the environment variables read while the file and the config loaded,
 * the fingerprint of the secrets the environments declare, caravan's own build, and each
 * environment's revision and endpoints. The next `caravan deploy` with the same arguments
 * reuses the result when all of that is as recorded *and* the backend confirms that every
 * environment is still ready at its recorded revision and endpoints. Anything else (or
 * `--force`, `--replace`) takes the full path, which records again.
 *
 * Not recorded (always the full path): environments with file snapshots (`include`, File/Dir
 * inputs: their files are not among the snapshot's sources), `RunOutput` inputs (they follow
 * task runs) and AppEndpoint inputs naming apps outside the plan.
 */
import {
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { fileURLToPath } from "node:url";
import { dirname, extname, join, resolve } from "node:path";
import type { Deployment } from "../api.ts";
import type { Scope } from "../backends/contract.ts";
import type { ResolvedConfig } from "../sdk/config.ts";
import type { ScopeFlags } from "./project.ts";

/** One environment as `deploy --json` prints it. */
export type DeploymentJSON = ReturnType<Deployment["toJSON"]>;

/** What a deploy was asked: a record answers only the same question again. */
export interface DeployArgs {
  file: string;
  names: string[];
  flags: ScopeFlags;
}

interface DeployRecord {
  key: string;
  caravan: string;
  config: ResolvedConfig;
  /** Absolute path -> sha256 of its contents (null: it did not exist when it was read). */
  files: Record<string, string | null>;
  /** Variables read while loading -> their value (null: unset). */
  env: Record<string, string | null>;
  secrets?: { keys: string[]; fingerprint: string };
  /** In the order the deploy printed them. */
  deployments: DeploymentJSON[];
}

/**
 * Records which environment variables are read (through `process.env`) from now on; `stop`
 * puts the real `process.env` back. Reads through a reference taken meanwhile (`const env =
 * process.env` in the user's module, read later by a spec) keep being recorded, so `values()`
 * taken after the deploy sees them too.
 */
export function watchEnvReads(): { stop(): void; values(): Record<string, string | null> } {
  const real = process.env;
  const reads = new Map<string, string | null>();
  const note = (key: string | symbol) => {
    if (typeof key === "string") reads.set(key, real[key] ?? null);
  };
  process.env = new Proxy(real, {
    // Enumerating the variables depends on which exist: all their names are recorded.
    ownKeys: (target) => (reads.set(ALL_NAMES, envNames(real)), Reflect.ownKeys(target)),
    get: (target, key) => (note(key), Reflect.get(target, key)),
    has: (target, key) => (note(key), Reflect.has(target, key)),
    getOwnPropertyDescriptor: (target, key) => (
      note(key),
      Reflect.getOwnPropertyDescriptor(target, key)
    ),
  });
  return {
    stop: () => void (process.env = real),
    values: () => Object.fromEntries(reads),
  };
}

/** The key under which `watchEnvReads` records the names of all variables, once enumerated. */
const ALL_NAMES = "*";
const envNames = (env: NodeJS.ProcessEnv) => Object.keys(env).sort().join("\0");

/** caravan's own code, wherever it runs from (dist/ or, through tsx, src/). */
const OWN = ["dist", "src"].map((d) => `${resolve(import.meta.dirname, "../..", d)}/`);
/** The `fs` functions whose first argument is a file the user's code depends on. */
const FS_READS = [
  "readFileSync",
  "readFile",
  "existsSync",
  "statSync",
  "lstatSync",
  "accessSync",
  "readdirSync",
  "readdir",
] as const;
const FS_PROMISES_READS = ["readFile", "readdir", "stat", "access"] as const;

/**
 * Records which files and directories are read or looked at through `fs` (FS_READS, and
 * FS_PROMISES_READS of fs.promises) from now on, outside node_modules: a definition that reads
 * a JSON file, checks that a file exists or lists a directory depends on it as much as on its
 * imports. `stop` puts `fs` back.
 */
export async function watchFileReads(): Promise<{ stop(): void; paths(): string[] }> {
  const [fs, { syncBuiltinESMExports }] = await Promise.all([
    import("node:fs"),
    import("node:module"),
  ]);
  const real = fs.default as unknown as Record<string, (...args: unknown[]) => unknown>;
  const promises = fs.default.promises as unknown as Record<string, (...a: unknown[]) => unknown>;
  const paths = new Set<string>();
  const note = (path: unknown) => {
    if (typeof path !== "string" && !(path instanceof URL)) return; // a descriptor: not a file
    let abs: string;
    try {
      abs = path instanceof URL ? fileURLToPath(path) : resolve(path);
    } catch {
      return; // not a file: URL (the call itself fails the same way)
    }
    // Packages, and caravan's own code (its build is recorded), are not the user's inputs.
    if (!abs.includes("/node_modules/") && !OWN.some((dir) => abs.startsWith(dir))) paths.add(abs);
  };
  const saved: [
    Record<string, (...args: unknown[]) => unknown>,
    string,
    (...a: unknown[]) => unknown,
  ][] = [];
  const watch = (on: Record<string, (...args: unknown[]) => unknown>, name: string) => {
    const fn = on[name]!;
    saved.push([on, name, fn]);
    on[name] = function (this: unknown, ...args: unknown[]) {
      note(args[0]);
      return fn.apply(this, args);
    };
  };
  for (const name of FS_READS) watch(real, name);
  for (const name of FS_PROMISES_READS) watch(promises, name);
  // `import { readFileSync } from "node:fs"` sees the patched functions too.
  syncBuiltinESMExports();
  return {
    stop: () => {
      for (const [on, name, fn] of saved) on[name] = fn;
      syncBuiltinESMExports();
    },
    paths: () => [...paths],
  };
}

/**
 * A file's content hash as `files` records it (a directory's: of its entries' names); null
 * when there is no such file.
 */
function contentHash(sha256: (s: string) => string, file: string): string | null {
  try {
    return sha256(readFileSync(file, "latin1"));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    if (code === "EISDIR") return `directory:${sha256(readdirSync(file).sort().join("\0"))}`;
    throw e;
  }
}

/** Reuses the last deploy of these arguments when nothing it depended on changed. */
export async function reuseLastDeploy(
  args: DeployArgs,
): Promise<{ config: ResolvedConfig; deployments: DeploymentJSON[] } | undefined> {
  const { path, key } = await recordPath(args);
  let record: DeployRecord;
  try {
    record = JSON.parse(readFileSync(path, "utf8")) as DeployRecord;
  } catch {
    return undefined;
  }
  if (record.key !== key || record.caravan !== caravanBuild()) return undefined;
  for (const [name, value] of Object.entries(record.env))
    if ((name === ALL_NAMES ? envNames(process.env) : (process.env[name] ?? null)) !== value)
      return undefined;
  const [{ sha256 }, { findConfigFile }] = await Promise.all([
    import("../sdk/stable.ts"),
    import("../sdk/config.ts"),
  ]);
  // A config file that appeared nearer (or went away) decides the scope now.
  if (findConfigFile(dirname(resolve(args.file))) !== record.config.file) return undefined;
  for (const [file, hash] of Object.entries(record.files)) {
    try {
      if (contentHash(sha256, file) !== hash) return undefined;
    } catch {
      return undefined; // unreadable
    }
  }
  const { config } = record;
  const scope: Scope = { project: config.project, domain: config.domain };
  const { backendProvider, connectBackend } = await import("../backends/registry.ts");
  if (record.secrets) {
    const store = (await backendProvider(config)).secrets?.(config);
    const { keys, fingerprint } = record.secrets;
    if (!store || (await store.fingerprint(scope, keys).catch(() => "")) !== fingerprint)
      return undefined;
  }
  // The backend confirms: everything still ready, at the recorded revisions and endpoints
  // (a dependency's endpoint is part of its dependents' revisions). Nothing running: nothing
  // to confirm, and the full path starts the control plane.
  const backend = await connectBackend(config, { start: false });
  if (!backend) return undefined;
  const deployed = await backend.status(scope).finally(() => backend.close());
  const byName = new Map(deployed.map((s) => [s.name, s]));
  for (const d of record.deployments) {
    const now = byName.get(d.name);
    if (
      !now ||
      now.state !== "ready" ||
      now.revision !== d.revision ||
      (now.endpoint ?? null) !== d.endpoint ||
      (now.internalEndpoint ?? null) !== d.internalEndpoint
    )
      return undefined;
  }
  return {
    config,
    deployments: record.deployments.map((d) => ({ ...d, status: "unchanged" as const })),
  };
}

/**
 * Records a deploy's result for `reuseLastDeploy`, when every environment is ready or
 * unchanged and nothing it depends on lies outside what a record can check (see above).
 * Never fails the deploy: without a record, the next one takes the full path.
 */
export async function recordDeploy(
  args: DeployArgs,
  loaded: { config: ResolvedConfig; env: Record<string, string | null>; read: string[] },
  result: { deployments: Deployment[]; sources: string[] },
): Promise<void> {
  const { path, key } = await recordPath(args);
  await writeRecord(path, key, loaded, result).catch(() => forget(path));
}

async function writeRecord(
  path: string,
  key: string,
  loaded: { config: ResolvedConfig; env: Record<string, string | null>; read: string[] },
  result: { deployments: Deployment[]; sources: string[] },
): Promise<void> {
  const [{ sha256 }, { hasInputs }, { inputValueKind }] = await Promise.all([
    import("../sdk/stable.ts"),
    import("../sdk/environment.ts"),
    import("../sdk/inputs.ts"),
  ]);
  const planned = new Set(result.deployments.map((d) => d.name));
  const checkable = result.deployments.every(
    (d) =>
      (d.status === "ready" || d.status === "unchanged") &&
      (!hasInputs(d.env) ||
        (d.env.include.length === 0 &&
          d.env.inputs.every((input) => {
            const kind = inputValueKind(input.value);
            return (
              kind === "string" ||
              (kind === "app-endpoint" && planned.has((input.value as { appName: string }).appName))
            );
          }))),
  );
  if (!checkable) return forget(path);
  const { config } = loaded;
  const files: Record<string, string | null> = {};
  for (const file of [...result.sources, ...(config.file ? [config.file] : []), ...loaded.read])
    files[file] = contentHash(sha256, file);
  const keys = [...new Set(result.deployments.flatMap((d) => d.env.secrets.map((s) => s.key)))];
  let secrets: DeployRecord["secrets"];
  if (keys.length) {
    const { backendProvider } = await import("../backends/registry.ts");
    const store = (await backendProvider(config)).secrets?.(config);
    if (!store) return forget(path);
    keys.sort();
    secrets = { keys, fingerprint: await store.fingerprint(config, keys) };
  }
  const record: DeployRecord = {
    key,
    caravan: caravanBuild(),
    config,
    files,
    env: loaded.env,
    ...(secrets ? { secrets } : {}),
    deployments: result.deployments.map((d) => d.toJSON()),
  };
  // Written whole or not at all: a concurrent deploy reads the old record or the new one.
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, JSON.stringify(record), { mode: 0o600 });
  renameSync(tmp, path);
}

/** A record that no longer holds is removed (a failed or uncheckable deploy). */
function forget(path: string): void {
  rmSync(path, { force: true });
}

/**
 * `$CARAVAN_HOME/deploys/<hash of the arguments>.json` (not created here: a deploy refused
 * before anything started leaves nothing behind).
 */
async function recordPath(args: DeployArgs): Promise<{ path: string; key: string }> {
  const [{ caravanHome }, { sha256, stableStringify }] = await Promise.all([
    import("../backends/home.ts"),
    import("../sdk/stable.ts"),
  ]);
  const key = stableStringify({
    file: resolve(args.file),
    names: args.names,
    cwd: process.cwd(),
    project: args.flags.project,
    domain: args.flags.domain,
    backend: args.flags.backend,
    context: args.flags.context,
  });
  return { path: join(caravanHome(), "deploys", `${sha256(key).slice(0, 24)}.json`), key };
}

/**
 * This caravan, as far as revisions go: its version, and when the modules that compute them
 * were built (a checkout rebuilds without a new version).
 */
function caravanBuild(): string {
  const at = (path: string) => new URL(path, import.meta.url);
  const { version } = JSON.parse(readFileSync(at("../../package.json"), "utf8")) as {
    version: string;
  };
  const ext = extname(import.meta.url);
  const built = ["../api", "../plan/plan", "../sdk/environment", "../backends/snapshot"].map(
    (m) => statSync(at(`${m}${ext}`)).mtimeMs,
  );
  return [version, ...built].join(":");
}
