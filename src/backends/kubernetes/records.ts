/**
 * What the cluster records of an environment: caravan's labels and annotations on its
 * Deployment (an app) or marker ConfigMap (a task environment), read back for status,
 * unchanged checks and teardown order. Pure.
 */
import type { DeployRequest, EnvironmentState, Scope } from "../contract.ts";
import { headline } from "../../errors.ts";
import { ANNOTATIONS, LABELS, type KubeObject } from "./manifests.ts";
import type { RolloutState } from "./rollout.ts";
import type { Deployment } from "./watch.ts";
import type { Job } from "./runs.ts";

/** One environment as the cluster records it. */
export interface Recorded {
  name: string;
  namespace: string;
  scope: Scope;
  kind: "app" | "task" | "job";
  revision: string;
  dependsOn: string[];
  desired: "running" | "stopped";
  deployedAt: string;
  deployment?: Deployment;
  /** A job: its newest Job (the run of its revision). */
  job?: Job;
  /**
   * A task environment: whether its revision's code registered its tasks in the cluster
   * (undefined: a marker from before registrations, taken as registered), and why not.
   */
  registration?: "pending" | "ready" | "failed";
  error?: string;
}

/**
 * The record an object carries in its labels and annotations (undefined: not an
 * environment's). Items of a list have no `kind`: the kind label says which it is.
 */
export function recordOf(o: KubeObject): Recorded | undefined {
  const labels = o.metadata.labels ?? {};
  const kind = labels[LABELS.kind];
  const annotations = o.metadata.annotations ?? {};
  const name = labels[LABELS.environment];
  const revision = annotations[ANNOTATIONS.revision];
  if (!name || !revision || (kind !== "app" && kind !== "task" && kind !== "job")) return undefined;
  let dependsOn: string[] = [];
  try {
    dependsOn = JSON.parse(annotations[ANNOTATIONS.dependsOn] ?? "[]") as string[];
  } catch {
    // hand-edited: no known dependencies
  }
  return {
    name,
    namespace: (o.metadata.namespace as string | undefined) ?? "",
    scope: { project: labels[LABELS.project] ?? "", domain: labels[LABELS.domain] ?? "" },
    kind,
    revision,
    dependsOn,
    desired: annotations[ANNOTATIONS.desired] === "stopped" ? "stopped" : "running",
    deployedAt: annotations[ANNOTATIONS.deployedAt] ?? "",
    ...(kind === "app" ? { deployment: o as Deployment } : {}),
    ...(kind === "job" ? { job: o as Job } : {}),
    ...(kind === "task" ? registrationOf(annotations) : {}),
  };
}

function registrationOf(annotations: Record<string, string>): Partial<Recorded> {
  const state = annotations[ANNOTATIONS.registration];
  if (state !== "pending" && state !== "ready" && state !== "failed") return {};
  const error = annotations[ANNOTATIONS.error];
  return { registration: state, ...(error ? { error } : {}) };
}

/** Same revision, meant to run, and (an app) fully rolled out: nothing to write. */
export function isUnchanged(r: Recorded, req: DeployRequest): boolean {
  if (r.revision !== req.revision || r.desired !== "running" || r.kind !== req.kind) return false;
  // A task environment whose registration failed, or never finished, registers again.
  if (r.kind === "task") return r.registration === undefined || r.registration === "ready";
  // A job's last success counts; one that failed, or never finished, runs again.
  if (r.kind === "job") return jobStateOf(r).state === "ready";
  const d = r.deployment;
  const s = d?.status ?? {};
  const desired = d?.spec?.replicas ?? 1;
  return (
    (s.observedGeneration ?? 0) >= (d?.metadata.generation ?? 0) &&
    (s.updatedReplicas ?? 0) === desired &&
    (s.availableReplicas ?? 0) >= desired &&
    (s.replicas ?? 0) === desired
  );
}

export function stateOf(
  r: Recorded,
  rollout: RolloutState,
  d: Deployment,
): { state: EnvironmentState; error?: string } {
  if (r.desired === "stopped") return { state: "stopped" };
  if (rollout.state === "ready") return { state: "ready" };
  if (rollout.state === "failed") {
    // A failed new revision while the old one still serves: still failed, and said so.
    const serving = (d.status?.availableReplicas ?? 0) > 0;
    return {
      state: "failed",
      error: `${rollout.reason}: ${headline(rollout.message)}${serving ? " (the previous revision still serves)" : ""}`,
    };
  }
  return { state: "starting" };
}

/** A task environment's state: ready once its tasks registered in the cluster. */
export function taskStateOf(r: Recorded): { state: EnvironmentState; error?: string } {
  if (r.desired === "stopped") return { state: "stopped" };
  if (r.registration === "failed")
    return { state: "failed", error: r.error ?? "its tasks could not be registered" };
  if (r.registration === "pending") return { state: "starting" };
  return { state: "ready" };
}

/** A job's state, from its newest Job: ready once it completed. */
export function jobStateOf(r: Recorded): { state: EnvironmentState; error?: string } {
  if (r.desired === "stopped") return { state: "stopped" };
  const conditions = r.job?.status?.conditions ?? [];
  const holds = (type: string) => conditions.find((c) => c.type === type && c.status === "True");
  if (holds("Complete") || holds("SuccessCriteriaMet")) return { state: "ready" };
  const failed = holds("Failed") ?? holds("FailureTarget");
  if (failed)
    return { state: "failed", error: `${failed.reason ?? "Failed"}: ${failed.message ?? ""}` };
  return { state: "starting" };
}

/** The newest of an environment's records (a job has a Job per run). */
export function newest(a: Recorded | undefined, b: Recorded): Recorded {
  if (!a) return b;
  const at = (r: Recorded) => String(r.job?.metadata.creationTimestamp ?? "");
  return at(b) > at(a) ? b : a;
}
