/**
 * The programmatic API (`plan`, `deploy`), shared by scripts and the CLI: load config, plan,
 * snapshot the code, and run the plan through the engine against the configured backend.
 * Heavy pieces (esbuild, the control plane client) load lazily, so importing `caravan`
 * inside an app costs nothing.
 */
import { dirname, resolve } from "node:path";
import type {
  Backend,
  Change,
  DeployRequest,
  Endpoints,
  RunRecord,
  Scope,
  WarmPoolSettings,
} from "./backends/contract.ts";
import type { EngineEvent, EnvironmentOutcome } from "./engine/engine.ts";
import { CaravanError, headline } from "./errors.ts";
import { planDeployment, planToJSON, type Plan, type PlannedEnvironment } from "./plan/plan.ts";
import { loadConfig, type ResolvedConfig, type TelemetryConfig } from "./sdk/config.ts";
import {
  hasInputs,
  isEnvironment,
  isTaskEnvironment,
  type Environment,
} from "./sdk/environment.ts";
import { shared } from "./sdk/global.ts";
import { inputValueKind, type AppEndpoint, type RunOutput } from "./sdk/inputs.ts";
import { sha256, stableStringify } from "./sdk/stable.ts";
import type { FilesSnapshot } from "./backends/files.ts";
import type { SecretAccess } from "./backends/registry.ts";

export interface DeployOptions {
  /** Restart environments even when unchanged. */
  force?: boolean;
  /**
   * Take over environments of the same name deployed from another file (by default such a
   * deploy is refused, naming the file that owns them; e.g. after moving the project).
   */
  replace?: boolean;
  /** Most environments deploying at once. @default unbounded */
  concurrency?: number;
  /**
   * False: start every process of this deploy cold, and empty the warm pool (`--no-warm`).
   * @default the config's `warmPool`
   */
  warm?: boolean;
  project?: string;
  domain?: string;
  /**
   * The module to snapshot: it must construct every environment deployed.
   * @default the file that declared the first environment passed to `deploy`
   */
  entry?: string;
  /** Progress events (the CLI renders them). */
  onEvent?: (event: EngineEvent) => void;
  /** Where to deploy. @default the configured backend (the local control plane) */
  backend?: Backend;
  /** Where snapshots and the compiled runtime go. @default under $CARAVAN_HOME (backends/home.ts) */
  paths?: { bundles: string; runtime: string };
}

/** One environment's result, as the seed's `flyte.deploy` returns them. */
export class Deployment {
  constructor(
    readonly env: Environment,
    readonly outcome: EnvironmentOutcome,
  ) {}
  get name(): string {
    return this.outcome.name;
  }
  get status(): EnvironmentOutcome["status"] {
    return this.outcome.status;
  }
  get endpoint(): string | undefined {
    return this.outcome.endpoint;
  }
  get revision(): string | undefined {
    return this.outcome.revision;
  }
  /** A one-line description: `app2-calls-app1 (app) ready at http://127.0.0.1:41234 [rev 1a2b3c]`. */
  envRepr(): string {
    const o = this.outcome;
    const where = o.endpoint ? ` at ${o.endpoint}` : "";
    const rev = o.revision ? ` [rev ${o.revision}]` : "";
    const why = o.error ? `: ${headline(o.error)}` : "";
    return `${o.name} (${o.kind}) ${o.status}${where}${rev}${why}`;
  }
  toJSON() {
    const o = this.outcome;
    return {
      name: o.name,
      kind: o.kind,
      status: o.status,
      revision: o.revision ?? null,
      endpoint: o.endpoint ?? null,
      internalEndpoint: o.internalEndpoint ?? null,
      error: o.error ?? null,
    };
  }
}

function splitArgs(args: unknown[]): { envs: unknown[]; opts: DeployOptions } {
  const last = args.at(-1);
  if (
    args.length &&
    !isEnvironment(last) &&
    last &&
    typeof last === "object" &&
    !Array.isArray(last)
  ) {
    return { envs: args.slice(0, -1), opts: last as DeployOptions };
  }
  return { envs: args, opts: {} };
}

/** The plan for these environments, as `caravan plan --json` prints it. Starts nothing. */
export async function plan(...args: [...Environment[], DeployOptions] | Environment[]) {
  const { envs, opts } = splitArgs(args);
  const config = await loadConfig(process.cwd(), { project: opts.project, domain: opts.domain });
  return planToJSON(planDeployment(envs, config));
}

/**
 * Deploys environments and everything they depend on; resolves when all are ready.
 * Throws `DEPLOY_FAILED` (with every result in `details.deployments`) if any failed.
 * @example const [d] = await deploy(env2); console.log(d.envRepr());
 */
export async function deploy(
  ...args: [...Environment[], DeployOptions] | Environment[]
): Promise<Deployment[]> {
  if (shared().runtime?.loading) {
    // A script's own top-level deploy() while an app process imports it: not for us.
    return [];
  }
  const { envs, opts } = splitArgs(args);
  const config = await loadConfig(shared().config?.rootDir ?? process.cwd(), {
    project: opts.project,
    domain: opts.domain,
  });
  const result = await deployEnvironments(envs, config, opts);
  // The environments asked for come first (the seed prints `deployments[0]`), then their dependencies.
  const asked = new Set(envs);
  const deployments = [
    ...result.deployments.filter((d) => asked.has(d.env)),
    ...result.deployments.filter((d) => !asked.has(d.env)),
  ];
  const failed = deployments.filter((d) => d.status === "failed" || d.status === "skipped");
  if (failed.length) {
    throw new CaravanError(
      "DEPLOY_FAILED",
      `deploy failed: ${failed.map((d) => d.envRepr()).join("; ")}`,
      { deployments: deployments.map((d) => d.toJSON()) },
    );
  }
  return deployments;
}

/** Opens the configured backend, starting the local control plane if it is not running. */
export async function openBackend(config: ResolvedConfig): Promise<Backend> {
  return (await connect(config, true))!;
}

/** The configured backend if it is up; never starts anything. */
export async function runningBackend(config: ResolvedConfig): Promise<Backend | undefined> {
  return connect(config, false);
}

async function connect(config: ResolvedConfig, start: boolean): Promise<Backend | undefined> {
  const { connectBackend } = await import("./backends/registry.ts");
  return connectBackend(config, { start });
}

/** Plans, snapshots and deploys; never throws for a failed environment (see the outcomes). */
export async function deployEnvironments(
  envs: unknown[],
  config: ResolvedConfig,
  opts: DeployOptions,
): Promise<{ plan: Plan; deployments: Deployment[]; sources: string[] }> {
  const ready = await readyToDeploy(envs, config, opts);
  const { plan, backend, known, sources } = ready;
  try {
    const { executePlan } = await import("./engine/engine.ts");
    const outcomes = await executePlan(plan, backend, {
      ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
      ...(opts.onEvent ? { onEvent: opts.onEvent } : {}),
      preload: backend.reserve !== undefined,
      request: (env, results) => {
        for (const [name, r] of results)
          if (r.endpoint && r.internalEndpoint)
            known.set(name, { endpoint: r.endpoint, internalEndpoint: r.internalEndpoint });
        return ready.request(env);
      },
    });
    for (const o of outcomes) {
      if (o.endpoint && o.internalEndpoint)
        shared().deployedEndpoints.set(o.name, {
          endpoint: o.endpoint,
          internalEndpoint: o.internalEndpoint,
        });
    }
    return {
      plan,
      deployments: outcomes.map((o) => new Deployment(plan.byName.get(o.name)!.env, o)),
      sources,
    };
  } finally {
    if (!opts.backend) await backend.close();
  }
}

/**
 * What a deploy would change, per environment in plan order, from a backend that can tell
 * (`Backend.preview`: the kubernetes backend dry-runs every object on the server); undefined
 * when the backend cannot. Starts and changes nothing.
 */
export async function previewEnvironments(
  envs: unknown[],
  config: ResolvedConfig,
  opts: DeployOptions = {},
): Promise<{ plan: Plan; changes?: Map<string, Change> }> {
  if (!opts.backend) {
    const { backendProvider } = await import("./backends/registry.ts");
    if (!(await backendProvider(config)).previews) return { plan: await planLazily(envs, config) };
  }
  const running = opts.backend ?? (await runningBackend(config));
  try {
    // Nothing to ask (no control plane runs, or a backend that cannot tell): the plan alone.
    if (!running?.preview) return { plan: await planOnly(envs, config, running) };
    const ready = await readyToDeploy(envs, config, { ...opts, backend: running });
    const changes = new Map<string, Change>();
    for (const env of ready.plan.environments)
      changes.set(env.name, await running.preview(await ready.request(env)));
    return { plan: ready.plan, changes };
  } finally {
    if (running && !opts.backend) await running.close();
  }
}

/**
 * The plan alone, from a backend that cannot preview: it is asked nothing (nor started)
 * unless an AppEndpoint names an app outside the plan, which must then be deployed there.
 */
async function planLazily(envs: unknown[], config: ResolvedConfig): Promise<Plan> {
  try {
    return planDeployment(envs, { project: config.project, domain: config.domain });
  } catch (e) {
    if (!(e instanceof CaravanError) || e.code !== "UNKNOWN_APP_ENDPOINT" || !e.details.appName)
      throw e;
  }
  const running = await runningBackend(config);
  try {
    return await planOnly(envs, config, running);
  } finally {
    await running?.close();
  }
}

async function planOnly(envs: unknown[], config: ResolvedConfig, running?: Backend) {
  const scope: Scope = { project: config.project, domain: config.domain };
  const deployed = running ? await running.status(scope) : [];
  return planDeployment(envs, { ...scope, deployedApps: new Set(deployed.map((d) => d.name)) });
}

/**
 * Everything a deploy does before the first environment starts: validate, plan, check
 * secrets and variables, copy files, resolve RunOutputs, snapshot the code, reserve
 * endpoints. Gives the plan, the backend and how to build each environment's request.
 */
async function readyToDeploy(
  envs: unknown[],
  config: ResolvedConfig,
  opts: DeployOptions,
): Promise<{
  plan: Plan;
  backend: Backend;
  known: Map<string, Endpoints>;
  request: (env: PlannedEnvironment) => DeployRequest;
  /** The files the code snapshot was built from. */
  sources: string[];
}> {
  const scope: Scope = { project: config.project, domain: config.domain };
  // Validate before starting anything, a control plane included: with none running, nothing
  // is deployed that an AppEndpoint could name.
  const running = opts.backend ?? (await runningBackend(config));
  // What follows may fail (validation); a backend opened here is closed then.
  const checked = await (async () => {
    const deployed = running ? await running.status(scope) : [];
    const plan = planDeployment(envs, {
      ...scope,
      deployedApps: new Set(deployed.map((d) => d.name)),
    });
    // Everything else that can be wrong is found before anything starts: missing secrets,
    // unknown ${VAR}s in command arguments, include paths and file inputs (copied now).
    const [{ clientPaths }, { backendProvider, unsupported }] = await Promise.all([
      import("./backends/home.ts"),
      import("./backends/registry.ts"),
    ]);
    const home = clientPaths();
    const declaring = plan.environments.filter((p) => p.env.secrets.length > 0).map((p) => p.name);
    let secrets: SecretAccess | undefined;
    if (declaring.length) {
      secrets = (await backendProvider(config)).secrets?.(config);
      if (!secrets)
        throw unsupported(
          config.backend,
          `secrets (declared by ${declaring.join(", ")})`,
          "it has no secret store",
        );
    }
    const prepared = await prepareEnvironments(plan, scope, home, secrets);
    await resolveRunOutputs(plan, scope, running, prepared);
    return { deployed, plan, prepared, home };
  })().catch(async (e) => {
    if (running && !opts.backend) await running.close();
    throw e;
  });
  const { deployed, plan, prepared, home } = checked;
  const backend = running ?? (await openBackend(config));
  try {
    // What this backend cannot honour is refused before anything is deployed.
    backend.validate?.(
      scope,
      plan.environments.map((p) => p.env.spec()),
    );
    // By default the file that declares the first environment asked for: it imports (and so
    // bundles) whatever it depends on, while its dependencies' files may not import it.
    const asked = envs.filter(isEnvironment).find((e) => e.declaredAt);
    const entry =
      opts.entry ??
      asked?.declaredAt?.file ??
      plan.environments.find((e) => e.env.declaredAt)?.env.declaredAt?.file;
    if (!entry)
      throw new CaravanError(
        "BUNDLE_FAILED",
        "cannot tell which file declares these environments; pass { entry }",
      );
    const { snapshotCode } = await import("./backends/snapshot.ts");
    const snapshot = await snapshotCode(
      entry,
      opts.paths ?? home,
      plan.environments.map((e) => e.env),
    );
    const known = new Map<string, Endpoints>();
    for (const d of deployed)
      if (d.endpoint && d.internalEndpoint)
        known.set(d.name, { endpoint: d.endpoint, internalEndpoint: d.internalEndpoint });
    // Endpoints are stable, so with them reserved every request can be built up front and
    // the backend can load dependents' code while their dependencies start.
    const apps = plan.environments.filter((e) => e.kind === "app").map((e) => e.name);
    const reserved = backend.reserve && apps.length ? await backend.reserve(scope, apps) : {};
    for (const [name, ep] of Object.entries(reserved)) known.set(name, ep);
    // A job's revision is part of its dependents' (a new migration restarts the apps after
    // it): known before anything runs, as every request can be built up front.
    const jobRevisions = new Map<string, string>();
    const warmPool = warmPoolRequest(config.warmPool, opts.warm);
    const request = (env: PlannedEnvironment): DeployRequest => {
      const jobs: Record<string, string> = {};
      for (const dep of env.dependsOn) {
        const planned = plan.byName.get(dep);
        if (planned?.kind !== "job") continue;
        let revision = jobRevisions.get(dep);
        if (!revision) jobRevisions.set(dep, (revision = request(planned).revision));
        jobs[dep] = revision;
      }
      const built = buildRequest(
        env,
        scope,
        snapshot.codeOf(env.env),
        snapshot.codeHashOf(env.env),
        known,
        opts.force ?? false,
        prepared.get(env.name) ?? {},
        jobs,
      );
      // The file that declares it owns the name (see DeployRequest.source).
      const source = resolve(env.env.declaredAt?.file ?? entry);
      return {
        ...withTelemetry(built, config.telemetry),
        source,
        ...(opts.replace ? { replace: true } : {}),
        ...(warmPool ? { warmPool } : {}),
      };
    };
    return { plan, backend, known, request, sources: snapshot.sources };
  } catch (e) {
    if (!opts.backend) await backend.close();
    throw e;
  }
}

/**
 * caravan.config's `telemetry`: `tracing: false` turns tracing off for every environment (a
 * new revision, so running ones restart without it); the limits go to the backend as they are.
 */
function withTelemetry(req: DeployRequest, settings: TelemetryConfig | undefined): DeployRequest {
  if (!settings) return req;
  const { tracing, ...limits } = settings;
  const off = tracing === false && req.spec.tracing !== false;
  return {
    ...req,
    ...(off
      ? {
          spec: { ...req.spec, tracing: false as const },
          revision: sha256(req.revision, "tracing:off").slice(0, 12),
        }
      : {}),
    ...(Object.keys(limits).length ? { telemetry: limits } : {}),
  };
}

/** What the client works out per environment before the plan runs. */
interface Prepared {
  /** Keyed hash of the secret values (never the values). */
  secrets?: string;
  files?: FilesSnapshot;
  /** `RunOutput` inputs, resolved to the output of their run, by input name. */
  runOutputs?: Record<string, string>;
}

/**
 * Resolves every `RunOutput` input to the output of its run (the latest succeeded run of the
 * task, or the run named), before anything starts. A string output is passed as it is;
 * anything else as JSON.
 */
async function resolveRunOutputs(
  plan: Plan,
  scope: Scope,
  backend: Backend | undefined,
  prepared: Map<string, Prepared>,
): Promise<void> {
  const where = `${scope.project}/${scope.domain}`;
  for (const p of plan.environments) {
    if (!hasInputs(p.env)) continue;
    for (const input of p.env.inputs) {
      if (inputValueKind(input.value) !== "run-output") continue;
      const ref = input.value as RunOutput;
      const what = `app "${p.name}" input "${input.name}"`;
      let run: RunRecord | undefined;
      if (ref.runId) {
        run = await backend?.getRun?.(ref.runId).catch(() => undefined);
        if (!run || run.project !== scope.project || run.domain !== scope.domain)
          throw new CaravanError(
            "NO_SUCH_RUN",
            `${what}: there is no run "${ref.runId}" in ${where} (caravan runs lists them)`,
            { runId: ref.runId },
          );
        if (run.status !== "succeeded")
          throw new CaravanError(
            "NO_SUCH_RUN",
            `${what}: run "${ref.runId}" of ${run.task} ${run.status === "failed" ? "failed" : `is still ${run.status}`}; give a run that succeeded`,
            { runId: ref.runId },
          );
      } else {
        const id = taskIdOf(ref.taskName!, plan);
        const [latest] = backend?.listRuns
          ? await backend.listRuns(scope, { task: id, status: "succeeded", limit: 1 })
          : [];
        if (!latest)
          throw new CaravanError(
            "NO_SUCH_RUN",
            `${what}: task ${id} has no succeeded run in ${where}; run it first (caravan run <file> ${id}), or give a runId`,
            { task: id },
          );
        // A list of runs may leave out outputs: the run itself has it.
        run = (await backend?.getRun?.(latest.id)) ?? latest;
      }
      const entry = prepared.get(p.name) ?? {};
      entry.runOutputs = {
        ...entry.runOutputs,
        [input.name]: typeof run.output === "string" ? run.output : JSON.stringify(run.output),
      };
      prepared.set(p.name, entry);
    }
  }
}

/** A task id from a `RunOutput`'s taskName: the id itself, or a task name declared in the plan. */
function taskIdOf(taskName: string, plan: Plan): string {
  if (taskName.includes(".")) return taskName;
  const ids = plan.environments
    .flatMap((p) => (isTaskEnvironment(p.env) ? [...p.env.tasks.values()] : []))
    .filter((t) => t.taskName === taskName)
    .map((t) => t.id);
  if (ids.length === 1) return ids[0]!;
  throw new CaravanError(
    "UNKNOWN_TASK",
    ids.length
      ? `RunOutput taskName "${taskName}" names ${ids.length} tasks (${ids.join(", ")}); give the full id`
      : `RunOutput taskName "${taskName}": give the task's id, "<environment>.${taskName}" (or add its task environment to dependsOn)`,
    { task: taskName },
  );
}

/**
 * Checks what would otherwise fail half-way, before anything starts: every declared secret
 * is set, every `${VAR}` in a command app's arguments is defined. Copies each app's files
 * (`include`, File/Dir inputs) into its content-addressed snapshot.
 */
async function prepareEnvironments(
  plan: Plan,
  scope: Scope,
  home: { files: string },
  secrets: SecretAccess | undefined,
): Promise<Map<string, Prepared>> {
  const out = new Map<string, Prepared>();
  const needsFiles = plan.environments.some(
    (p) =>
      hasInputs(p.env) &&
      (p.env.include.length > 0 ||
        p.env.inputs.some((i) => ["file", "dir"].includes(inputValueKind(i.value) ?? ""))),
  );
  const [{ missingSecrets }, { snapshotFiles }, { checkCommandVariables }] = await Promise.all([
    import("./backends/secrets.ts"),
    import("./backends/files.ts"),
    import("./backends/launch.ts"),
  ]);
  const missing: Record<string, string[]> = {};
  for (const p of plan.environments) {
    const keys = p.env.secrets.map((s) => s.key);
    if (secrets && keys.length) {
      const lacking = await secrets.missing(scope, keys);
      if (lacking.length) missing[p.name] = lacking;
    }
    if (hasInputs(p.env) && p.env.command) {
      const appDependencies = p.dependsOn.filter((d) => plan.byName.get(d)?.kind === "app");
      checkCommandVariables(scope, p.env.spec(), appDependencies);
    }
  }
  if (Object.keys(missing).length) throw missingSecrets(scope, missing);
  for (const p of plan.environments) {
    const entry: Prepared = {};
    if (secrets && p.env.secrets.length)
      entry.secrets = await secrets.fingerprint(
        scope,
        p.env.secrets.map((s) => s.key),
      );
    if (needsFiles && hasInputs(p.env)) {
      const base = p.env.declaredAt ? dirname(p.env.declaredAt.file) : process.cwd();
      const files = snapshotFiles(p.env, base, home.files);
      if (files) entry.files = files;
    }
    out.set(p.name, entry);
  }
  return out;
}

/** What a deploy asks of the warm pool: off with `--no-warm`, else the config's setting. */
function warmPoolRequest(
  config: ResolvedConfig["warmPool"],
  warm: boolean | undefined,
): WarmPoolSettings | undefined {
  if (warm === false || config === false) return { size: 0 };
  return config
    ? {
        ...(config.size !== undefined ? { size: config.size } : {}),
        ...(config.preload !== undefined ? { preload: config.preload } : {}),
      }
    : undefined;
}

function buildRequest(
  planned: PlannedEnvironment,
  scope: Scope,
  code: DeployRequest["code"],
  codeHash: string,
  known: Map<string, Endpoints>,
  force: boolean,
  prepared: Prepared,
  /** Revisions of the jobs it depends on, by name. */
  jobs: Record<string, string> = {},
): DeployRequest {
  const env = planned.env;
  const dependencies: Record<string, Endpoints> = {};
  for (const dep of planned.dependsOn) {
    const ep = known.get(dep);
    if (ep) dependencies[dep] = ep;
  }
  const inputs: Record<string, string> = {};
  if (hasInputs(env)) {
    for (const input of env.inputs) {
      const kind = inputValueKind(input.value);
      if (kind === "string") inputs[input.name] = input.value as string;
      else if (kind === "app-endpoint") {
        const ref = input.value as AppEndpoint;
        const ep = known.get(ref.appName);
        if (!ep) {
          throw new CaravanError(
            "UNKNOWN_APP_ENDPOINT",
            `app "${env.name}" input "${input.name}": app "${ref.appName}" has no endpoint yet; add it to dependsOn so it is ready first`,
          );
        }
        inputs[input.name] = ref.public ? ep.endpoint : ep.internalEndpoint;
      } else if (kind === "file" || kind === "dir") {
        inputs[input.name] = prepared.files!.inputs[input.name]!;
      } else {
        inputs[input.name] = prepared.runOutputs![input.name]!;
      }
    }
  }
  const spec = env.spec();
  const revision = sha256(
    planned.specHash,
    codeHash,
    stableStringify(inputs),
    stableStringify(dependencies),
    prepared.secrets ?? "",
    prepared.files?.hash ?? "",
    // Only when there are any: revisions without jobs stay what they were.
    ...(Object.keys(jobs).length ? [stableStringify(jobs)] : []),
  ).slice(0, 12);
  return {
    scope,
    name: env.name,
    kind: env.kind,
    spec,
    revision,
    code,
    inputs,
    dependencies,
    force,
    ...(prepared.files ? { files: { hash: prepared.files.hash, dir: prepared.files.dir } } : {}),
  };
}
