/**
 * The engine runs a plan against a backend. Each environment starts the moment all of its
 * dependencies are ready (never a whole "level" at a time); independent ones run in
 * parallel up to `concurrency`; a failure skips everything that depends on it, while
 * independent branches finish. It knows nothing about processes or HTTP.
 */
import type { Backend, DeployRequest, DeployResult } from "../backends/contract.ts";
import { CaravanError, isCaravanError } from "../errors.ts";
import { transitiveDependents } from "../plan/graph.ts";
import type { Plan, PlannedEnvironment } from "../plan/plan.ts";
import type { EnvironmentKind } from "../sdk/environment.ts";

export type Outcome = "ready" | "unchanged" | "failed" | "skipped";

export interface EnvironmentOutcome {
  name: string;
  kind: EnvironmentKind;
  status: Outcome;
  revision?: string;
  endpoint?: string;
  internalEndpoint?: string;
  error?: string;
  /** Milliseconds from the start of the deploy. */
  startedAt?: number;
  finishedAt: number;
}

export type EngineEvent =
  | { type: "waiting"; name: string; on: string[]; at: number }
  | { type: "starting"; name: string; at: number }
  | { type: "done"; outcome: EnvironmentOutcome; at: number };

export interface ExecuteOptions {
  /** Most environments deploying at once. @default Infinity */
  concurrency?: number;
  /** Builds the backend request once the environment's dependencies are ready. */
  request: (
    env: PlannedEnvironment,
    ready: ReadonlyMap<string, DeployResult>,
  ) => Promise<DeployRequest> | DeployRequest;
  onEvent?: (event: EngineEvent) => void;
  /**
   * Let the backend load the code of environments that wait for dependencies while those
   * start (two-phase start); they still start only once their dependencies are ready.
   * Needs requests that can be built up front. Ignored with a concurrency limit, which is
   * there to bound the load on the machine. @default false
   */
  preload?: boolean;
}

export async function executePlan(
  plan: Plan,
  backend: Backend,
  opts: ExecuteOptions,
): Promise<EnvironmentOutcome[]> {
  const t0 = performance.now();
  const now = () => Math.round(performance.now() - t0);
  const emit = opts.onEvent ?? (() => {});
  const limit = opts.concurrency ?? Infinity;
  if (!(limit >= 1))
    throw new CaravanError("USAGE", `--concurrency must be at least 1, got ${opts.concurrency}`);

  const pending = new Map<string, number>();
  const outcomes = new Map<string, EnvironmentOutcome>();
  const results = new Map<string, DeployResult>();
  const queue: PlannedEnvironment[] = [];
  let running = 0;
  let finish!: () => void;
  const allDone = new Promise<void>((r) => (finish = r));

  const settle = (outcome: EnvironmentOutcome) => {
    outcomes.set(outcome.name, outcome);
    emit({ type: "done", outcome, at: outcome.finishedAt });
    if (outcomes.size === plan.environments.length) finish();
  };

  const scope = { project: plan.project, domain: plan.domain };
  const preloaded = new Set<string>();
  /** Preloads in flight, and discards of preloaded environments that were skipped. */
  const preparing = new Map<string, Promise<unknown>>();
  const requests = new Map<string, Promise<DeployRequest>>();
  const discarding: Promise<unknown>[] = [];
  /** Whether `dependent` waits for `dep` only to start (a soft dependency), not to be ready. */
  const isSoft = (dependent: string, dep: string) =>
    plan.byName.get(dependent)!.softDependsOn.includes(dep);
  // A failure skips what waits for it to be ready; a soft dependent is only degraded.
  const dependentsOf = (name: string) =>
    plan.byName.get(name)!.dependents.filter((d) => !isSoft(d, name));
  /** One of `name`'s dependencies is done with: it may start once none is left. */
  const release = (name: string) => {
    const left = pending.get(name)! - 1;
    pending.set(name, left);
    if (left === 0 && !outcomes.has(name)) queue.push(plan.byName.get(name)!);
  };
  /** `name` started (or will never start): what depends on it softly need not wait. */
  const releaseSoft = (name: string) => {
    for (const d of plan.byName.get(name)!.dependents) if (isSoft(d, name)) release(d);
  };
  const skipDependents = (failed: string) => {
    // Those skipped by an earlier failure were settled (and released) then: never twice.
    const skipped = [...transitiveDependents([failed], dependentsOf)].filter(
      (name) => !outcomes.has(name),
    );
    for (const name of skipped) {
      if (preloaded.has(name)) {
        // After its preload (which may still be in flight), or that would outlive the discard.
        const prepared = preparing.get(name) ?? Promise.resolve();
        discarding.push(prepared.then(() => backend.discard?.(scope, name)).catch(() => {}));
      }
      const p = plan.byName.get(name)!;
      settle({
        name,
        kind: p.kind,
        status: "skipped",
        error: `dependency ${failed} failed`,
        finishedAt: now(),
      });
    }
    for (const name of skipped) releaseSoft(name);
    pump();
  };

  const pump = () => {
    while (running < limit && queue.length) {
      const env = queue.shift()!;
      running++;
      void start(env).finally(() => {
        running--;
        pump();
      });
    }
  };

  const start = async (env: PlannedEnvironment) => {
    const startedAt = now();
    emit({ type: "starting", name: env.name, at: startedAt });
    releaseSoft(env.name);
    pump();
    try {
      // A preloaded environment's request was built up front (from reserved endpoints);
      // if building it failed then, build it again now, so the error is reported.
      const early = requests.get(env.name);
      const request =
        (early && (await early.catch(() => undefined))) ?? (await opts.request(env, results));
      const result = await backend.deploy(request);
      results.set(env.name, result);
      settle({
        name: env.name,
        kind: env.kind,
        status: result.status,
        revision: result.revision,
        ...(result.endpoint ? { endpoint: result.endpoint } : {}),
        ...(result.internalEndpoint ? { internalEndpoint: result.internalEndpoint } : {}),
        startedAt,
        finishedAt: now(),
      });
      for (const d of env.dependents) if (!isSoft(d, env.name)) release(d);
    } catch (e) {
      const message = isCaravanError(e) ? e.message : `internal error: ${(e as Error)?.stack ?? e}`;
      // A dependency taken down by another command after it was ready here: this deploy
      // does not report it ready (at an endpoint that is gone).
      if (isCaravanError(e) && e.code === "DEPENDENCY_GONE") {
        for (const dep of (e.details.dependencies as string[] | undefined) ?? []) {
          const was = outcomes.get(dep);
          if (was?.status !== "ready" && was?.status !== "unchanged") continue;
          const { endpoint: _e, internalEndpoint: _i, ...rest } = was;
          outcomes.set(dep, {
            ...rest,
            status: "failed",
            error: `${dep} was taken down by another command while this deploy ran`,
          });
        }
      }
      settle({
        name: env.name,
        kind: env.kind,
        status: "failed",
        error: message,
        startedAt,
        finishedAt: now(),
      });
      skipDependents(env.name);
    }
  };

  if (plan.environments.length === 0) return [];
  for (const env of plan.environments) {
    pending.set(env.name, env.dependsOn.length);
    if (env.dependsOn.length === 0) queue.push(env);
    else emit({ type: "waiting", name: env.name, on: env.dependsOn, at: 0 });
  }
  if (opts.preload && backend.prepare && limit === Infinity) {
    for (const env of plan.environments) {
      if (env.dependsOn.length === 0) continue;
      preloaded.add(env.name);
      // Best effort: a request that cannot be built or prepared yet fails again, with its
      // reason, when the environment is deployed.
      const request = Promise.resolve().then(() => opts.request(env, results));
      request.catch(() => {});
      requests.set(env.name, request);
      const prepared = request.then((r) => backend.prepare!(r)).catch(() => {});
      preparing.set(env.name, prepared);
    }
  }
  pump();
  await allDone;
  // Nothing prepared for a skipped environment outlives the deploy.
  await Promise.allSettled(discarding);
  return plan.order.map((n) => outcomes.get(n)!);
}
