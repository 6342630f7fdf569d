/**
 * Dependency health: an environment whose dependency is not serving (it crashed and is
 * restarting, failed, was stopped, or is gone) is *degraded*, with the reason; it is healthy
 * again once every dependency is ready. Derived from the states a backend records, the same way
 * for every backend. Pure.
 */
import { headline } from "../errors.ts";
import type { EnvironmentState } from "./contract.ts";

export interface Health {
  state: "healthy" | "degraded";
  /** Why it is degraded: the first dependency that is not ready, and its state. */
  reason?: string;
}

/** What health is derived from (an environment's status, or a control plane's record). */
export interface HealthInput {
  project: string;
  domain: string;
  name: string;
  state: EnvironmentState;
  dependsOn: string[];
  error?: string | null;
}

const keyOf = (e: { project: string; domain: string; name: string }) =>
  `${e.project}/${e.domain}/${e.name}`;

/**
 * The health of every environment that should be running (a stopped or failed one has none),
 * by `project/domain/name`.
 */
export function dependencyHealth(envs: HealthInput[]): Map<string, Health> {
  const byKey = new Map(envs.map((e) => [keyOf(e), e]));
  const out = new Map<string, Health>();
  for (const env of envs) {
    if (env.state === "stopped" || env.state === "failed") continue;
    let reason: string | undefined;
    for (const dep of env.dependsOn) {
      const d = byKey.get(keyOf({ ...env, name: dep }));
      if (!d) reason = `dependency ${dep} is not deployed`;
      else if (d.state !== "ready")
        reason = `dependency ${dep} is ${d.state}${d.error ? `: ${headline(d.error)}` : ""}`;
      if (reason) break;
    }
    out.set(keyOf(env), reason ? { state: "degraded", reason } : { state: "healthy" });
  }
  return out;
}

export { keyOf as healthKey };
