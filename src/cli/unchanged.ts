/**
 * Commands that answer without importing the user's code when nothing it read changed: an
 * unchanged `caravan deploy` and an unchanged `caravan plan`. Importing the file (TypeScript
 * through tsx, the frameworks it loads) costs several times what node takes to start, only
 * to compute what the last run of the same command already computed.
 *
 * So after a run, the CLI records what its result was computed from (a `LoadRecord`): the
 * contents of every file the user's code imports (the files a code snapshot covers, and every
 * file the ESM module hooks saw loaded or looked for in vain: a computed `import()`, the config
 * file's own imports; a computed `require()` is not seen), of
 * the config file and of the files the user's code read with `fs` while it loaded (or that they
 * did not exist), the environment variables read while the file and the config loaded, and
 * caravan's own build. The next run with the same arguments reuses the result when all of
 * that is as recorded. Anything else takes the full path, which records again.
 *
 * A deploy's record also holds the fingerprint of the secrets the environments declare and
 * each environment's revision and endpoints; it is written only when every environment came
 * out ready or unchanged, and reused only when the backend confirms that every environment is
 * still ready at its recorded revision and endpoints (`--force`, `--replace` never reuse).
 * Not recorded (always the full path): environments with file snapshots (`include`, File/Dir
 * inputs: their files are not among the snapshot's sources), `RunOutput` inputs (they follow
 * task runs) and AppEndpoint inputs naming apps outside the plan.
 *
 * A plan's record holds the plan as `plan --json` prints it. Not recorded: a plan that failed,
 * one whose backend says what a deploy would change (kubernetes: the cluster's state is not a
 * file), and one that asked the control plane which apps are deployed (an AppEndpoint naming
 * an app outside the plan). Planning never starts or asks a control plane, so the records live
 * in `$CARAVAN_HOME/plans/` (caravan's own state directory, beside the deploy records, and
 * per home as tests isolate it), never in the user's project.
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
import type { Plan, planToJSON } from "../plan/plan.ts";
import type { ResolvedConfig } from "../sdk/config.ts";
import type { Environment } from "../sdk/environment.ts";
import { loadProject, type LoadedProject, type ScopeFlags } from "./project.ts";

/** A plan as `plan --json` prints it (with a backend that cannot preview changes). */
export type PlanJSON = ReturnType<typeof planToJSON>;

/** One environment as `deploy --json` prints it. */
export type DeploymentJSON = ReturnType<Deployment["toJSON"]>;

/** What a command was asked: a record answers only the same question again. */
export interface CommandArgs {
  file: string;
  names: string[];
  flags: ScopeFlags;
}

/** What a result was computed from: it holds while all of this is as recorded. */
interface LoadRecord {
  key: string;
  caravan: string;
  config: ResolvedConfig;
  /** Absolute path -> sha256 of its contents (null: it did not exist when it was read). */
  files: Record<string, string | null>;
  /** Variables read while loading -> their value (null: unset). */
  env: Record<string, string | null>;
}

interface DeployRecord extends LoadRecord {
  secrets?: { keys: string[]; fingerprint: string };
  /** In the order the deploy printed them. */
  deployments: DeploymentJSON[];
}

interface PlanRecord extends LoadRecord {
  plan: PlanJSON;
}

/** Where each command's records go, under `$CARAVAN_HOME`. */
type RecordKind = "deploys" | "plans";

/** What loading the file read, besides the modules it imported (see `loadWatched`). */
export interface LoadReads {
  config: ResolvedConfig;
  env: Record<string, string | null>;
  /** Undefined when not all are known (the module hooks did not answer): nothing is recorded. */
  read: string[] | undefined;
}

/**
 * `loadProject`, watching which variables and files the user's code reads. `reads()` may be
 * called later (after a deploy): reads through a reference the code kept are recorded too.
 */
export async function loadWatched(
  args: CommandArgs,
): Promise<{ project: LoadedProject; reads: () => Promise<LoadReads> }> {
  const env = watchEnvReads();
  const files = await watchFileReads();
  const project = await loadProject(args.file, args.names, args.flags).finally(() => {
    env.stop();
    files.stop();
  });
  return {
    project,
    reads: async () => {
      // Asked when the record is written: a module the deploy itself imported counts too.
      const { userModulesLoaded } = await import("../sdk/user-imports.ts");
      const modules = await userModulesLoaded();
      const own = (file: string) => OWN.some((dir) => file.startsWith(dir));
      return {
        config: project.config,
        env: env.values(),
        read: modules && [...new Set([...files.paths(), ...modules.filter((f) => !own(f))])],
      };
    },
  };
}

/**
 * Records which environment variables are read (through `process.env`) from now on; `stop`
 * puts the real `process.env` back. Reads through a reference taken meanwhile (`const env =
 * process.env` in the user's module, read later by a spec) keep being recorded, so `values()`
 * taken after the deploy sees them too.
 */
function watchEnvReads(): { stop(): void; values(): Record<string, string | null> } {
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
async function watchFileReads(): Promise<{ stop(): void; paths(): string[] }> {
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

/**
 * The record of the last run of `kind` with these arguments, when nothing it was computed from
 * changed (see `LoadRecord`); undefined otherwise.
 */
async function readRecord<R extends LoadRecord>(
  kind: RecordKind,
  args: CommandArgs,
): Promise<R | undefined> {
  const { path, key } = await recordPath(kind, args);
  let text: string;
  let record: LoadRecord;
  try {
    text = readFileSync(path, "utf8");
    record = JSON.parse(text.slice(0, text.indexOf("\n"))) as LoadRecord;
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
  try {
    return { ...record, ...JSON.parse(text.slice(text.indexOf("\n") + 1)) } as R;
  } catch {
    return undefined;
  }
}

/**
 * Writes a record of `kind` for these arguments: `result` with what it was computed from —
 * `sources` (the files the user's code imports) and what the load read.
 */
async function writeRecord<R extends LoadRecord>(
  kind: RecordKind,
  args: CommandArgs,
  loaded: LoadReads,
  sources: string[],
  result: Omit<R, keyof LoadRecord>,
): Promise<void> {
  const [{ path, key }, { sha256 }] = await Promise.all([
    recordPath(kind, args),
    import("../sdk/stable.ts"),
  ]);
  const { config, read } = loaded;
  if (!read) throw new Error("the files the code loaded are not all known");
  const files: Record<string, string | null> = {};
  for (const file of [...sources, ...(config.file ? [config.file] : []), ...read]) {
    files[file] = contentHash(sha256, file);
    // Saved while this command ran: what it loaded may be older than what is hashed now, and
    // such a record would stand for the new content with the old result.
    if (modifiedSince(file, performance.timeOrigin))
      throw new Error(`${file} changed while it was loaded`);
  }
  const record: LoadRecord = { key, caravan: caravanBuild(), config, files, env: loaded.env };
  // Written whole or not at all: a concurrent run reads the old record or the new one. Two
  // lines: what the result was computed from, checked before the result (a 20,000-environment
  // plan, say) is parsed.
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  const tmp = `${path}.tmp-${process.pid}`;
  writeFileSync(tmp, `${JSON.stringify(record)}\n${JSON.stringify(result)}`, { mode: 0o600 });
  renameSync(tmp, path);
}

function modifiedSince(file: string, since: number): boolean {
  try {
    return statSync(file).mtimeMs >= since;
  } catch {
    return false; // gone: its hash says so
  }
}

/** A record that no longer holds is removed (a failed or uncheckable run). */
async function forget(kind: RecordKind, args: CommandArgs): Promise<void> {
  rmSync((await recordPath(kind, args)).path, { force: true });
}

/** Reuses the last deploy of these arguments when nothing it depended on changed. */
export async function reuseLastDeploy(
  args: CommandArgs,
): Promise<{ config: ResolvedConfig; deployments: DeploymentJSON[] } | undefined> {
  const record = await readRecord<DeployRecord>("deploys", args);
  if (!record) return undefined;
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
  args: CommandArgs,
  loaded: LoadReads,
  result: { deployments: Deployment[]; sources: string[] },
): Promise<void> {
  await writeDeployRecord(args, loaded, result).catch(() => forget("deploys", args));
}

async function writeDeployRecord(
  args: CommandArgs,
  loaded: LoadReads,
  result: { deployments: Deployment[]; sources: string[] },
): Promise<void> {
  const [{ hasInputs }, { inputValueKind }] = await Promise.all([
    import("../sdk/environment.ts"),
    import("../sdk/inputs.ts"),
  ]);
  // Every input a string or an AppEndpoint, and those name apps of this deploy.
  const checkable =
    result.deployments.every(
      (d) =>
        (d.status === "ready" || d.status === "unchanged") &&
        (!hasInputs(d.env) ||
          (d.env.include.length === 0 &&
            d.env.inputs.every((input) =>
              ["string", "app-endpoint"].includes(inputValueKind(input.value)!),
            ))),
    ) && !(await namesOthers(result.deployments.map((d) => d.env)));
  if (!checkable) return forget("deploys", args);
  const { config } = loaded;
  const keys = [...new Set(result.deployments.flatMap((d) => d.env.secrets.map((s) => s.key)))];
  let secrets: DeployRecord["secrets"];
  if (keys.length) {
    const { backendProvider } = await import("../backends/registry.ts");
    const store = (await backendProvider(config)).secrets?.(config);
    if (!store) return forget("deploys", args);
    keys.sort();
    secrets = { keys, fingerprint: await store.fingerprint(config, keys) };
  }
  await writeRecord<DeployRecord>("deploys", args, loaded, result.sources, {
    ...(secrets ? { secrets } : {}),
    deployments: result.deployments.map((d) => d.toJSON()),
  });
}

/** The last plan of these arguments, as `plan --json` printed it, when nothing it read changed. */
export async function reuseLastPlan(args: CommandArgs): Promise<PlanJSON | undefined> {
  return (await readRecord<PlanRecord>("plans", args))?.plan;
}

/**
 * Records a plan for `reuseLastPlan`, unless its output depends on more than the files: a
 * backend that previews changes, or an AppEndpoint naming an app outside the plan (the control
 * plane was asked whether it is deployed). `sources` are the files the user's code imports
 * (`importedFiles`), undefined when they could not be listed. Never fails the plan.
 */
export async function recordPlan(
  args: CommandArgs,
  loaded: LoadReads,
  plan: { planned: Plan; printed: PlanJSON },
  sources: string[] | undefined,
): Promise<void> {
  const { backendProvider } = await import("../backends/registry.ts");
  const envs = plan.planned.environments.map((e) => e.env);
  if (!sources || (await backendProvider(loaded.config)).previews || (await namesOthers(envs)))
    return forget("plans", args);
  await writeRecord<PlanRecord>("plans", args, loaded, sources, { plan: plan.printed }).catch(() =>
    forget("plans", args),
  );
}

/** Whether an AppEndpoint input of these environments names an app that is not among them. */
async function namesOthers(envs: Environment[]): Promise<boolean> {
  const [{ hasInputs }, { inputValueKind }] = await Promise.all([
    import("../sdk/environment.ts"),
    import("../sdk/inputs.ts"),
  ]);
  const names = new Set(envs.map((e) => e.name));
  return envs.some(
    (e) =>
      hasInputs(e) &&
      e.inputs.some(
        (input) =>
          inputValueKind(input.value) === "app-endpoint" &&
          !names.has((input.value as { appName: string }).appName),
      ),
  );
}

/**
 * Starts listing the files `entry` imports, itself included, outside packages: those a code
 * snapshot of it covers (`backends/snapshot.ts` bundles the same way), listed by esbuild
 * without writing a bundle. For a command that snapshots nothing (`plan`), to run beside the
 * import of the file: it resolves once esbuild has started (having read what it reads of
 * `process.env`, which the file's own reads must not include), to the listing, which resolves
 * to undefined when it fails.
 */
export async function importedFiles(
  entry: string,
): Promise<{ listing: Promise<string[] | undefined> }> {
  const { build, stop } = await import("esbuild");
  const workDir = dirname(resolve(entry));
  const built = build({
    entryPoints: [resolve(entry)],
    absWorkingDir: workDir,
    bundle: true,
    platform: "node",
    format: "esm",
    target: "node20",
    packages: "external",
    metafile: true,
    write: false,
    outdir: "out",
    logLevel: "silent",
  });
  const listing = built
    .then((result) => Object.keys(result.metafile.inputs).map((input) => resolve(workDir, input)))
    .catch(() => undefined)
    // esbuild's service process would otherwise outlive the command's work.
    .finally(() => stop());
  return { listing };
}

/**
 * `$CARAVAN_HOME/<kind>/<hash of the arguments>.json` (not created here: a deploy refused
 * before anything started leaves nothing behind).
 */
async function recordPath(
  kind: RecordKind,
  args: CommandArgs,
): Promise<{ path: string; key: string }> {
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
  return { path: join(caravanHome(), kind, `${sha256(key).slice(0, 24)}.json`), key };
}

/**
 * What a record covers, as a number: bumped whenever that changes, so that a record made by a
 * build that covered less is not trusted by one that covers more (2: the modules the hooks saw).
 */
const RECORD_FORMAT = 2;

/**
 * This caravan, as far as revisions go: its record format, version, and when the modules that
 * compute them were built (a checkout rebuilds without a new version).
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
  return [RECORD_FORMAT, version, ...built].join(":");
}
