/**
 * Is a rollout done, still going, or failed? Pure: the caller reads the objects, this decides.
 * Done is kubectl's rule (`kubectl rollout status`): the controller has seen the latest
 * generation, and updated = total = available replicas = desired; plus at least one ready
 * endpoint behind the Service, so a dependent that calls the app right away is answered.
 * Failed is anything that will not get better by waiting: the progress deadline passed, or a
 * new pod is crash-looping, cannot pull its image, cannot be scheduled, or was OOM-killed.
 */

export type RolloutState =
  | { state: "ready" }
  | { state: "progressing"; why: string }
  | { state: "failed"; reason: string; message: string; pod?: string };

/** A status condition, as every kind reports them. */
export interface Condition {
  type: string;
  status: string;
  reason?: string;
  message?: string;
  lastTransitionTime?: string;
}

export interface DeploymentLike {
  metadata: { generation?: number; annotations?: Record<string, string> };
  spec?: { replicas?: number };
  status?: {
    observedGeneration?: number;
    replicas?: number;
    updatedReplicas?: number;
    availableReplicas?: number;
    readyReplicas?: number;
    conditions?: Condition[];
  };
}

export interface PodLike {
  metadata: { name: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec?: { nodeName?: string };
  status?: {
    phase?: string;
    podIP?: string;
    conditions?: Condition[];
    containerStatuses?: ContainerStatusLike[];
  };
}

interface ContainerStatusLike {
  name: string;
  ready?: boolean;
  restartCount?: number;
  state?: {
    waiting?: { reason?: string; message?: string };
    terminated?: { reason?: string; exitCode?: number; message?: string };
    running?: unknown;
  };
  lastState?: { terminated?: { reason?: string; exitCode?: number; message?: string } };
}

export interface EndpointSliceLike {
  endpoints?: { conditions?: { ready?: boolean } }[];
}

/** Container reasons that waiting will not fix. */
const FATAL_WAITING = new Set([
  "CrashLoopBackOff",
  "ImagePullBackOff",
  "ErrImagePull",
  "InvalidImageName",
  "CreateContainerConfigError",
  "CreateContainerError",
  "RunContainerError",
]);

/**
 * A pod that cannot be scheduled may be placed a moment later (a node becoming ready, an
 * autoscaler adding one): it fails the rollout only after being unschedulable this long.
 */
export const UNSCHEDULABLE_GRACE_MS = 10_000;

/** What the user should do about each reason. */
const ADVICE: Record<string, string> = {
  CrashLoopBackOff: "the app exits soon after it starts; see its logs",
  ImagePullBackOff:
    "the image cannot be pulled; check its name and that the cluster can reach its registry (caravan image build pushes it)",
  ErrImagePull:
    "the image cannot be pulled; check its name and that the cluster can reach its registry (caravan image build pushes it)",
  InvalidImageName: "the image reference is not valid",
  CreateContainerConfigError:
    "the pod refers to something missing (often a Secret: caravan secret set)",
  OOMKilled: "the app used more memory than its limit; raise resources.memory",
  Unschedulable: "no node can take the pod; lower resources or add nodes",
  ProgressDeadlineExceeded:
    "the rollout made no progress within the start timeout (timeouts.start)",
};

export function adviceFor(reason: string): string | undefined {
  return ADVICE[reason];
}

/**
 * The state of a Deployment's rollout of `revision`, from the Deployment, the pods of that
 * revision and the Service's EndpointSlices.
 */
export function rolloutState(
  deployment: DeploymentLike,
  pods: PodLike[],
  slices: EndpointSliceLike[],
  now = Date.now(),
): RolloutState {
  for (const pod of pods) {
    if (pod.metadata.deletionTimestamp) continue;
    const failure = podFailure(pod, now);
    if (failure) return { state: "failed", ...failure, pod: pod.metadata.name };
  }
  const status = deployment.status ?? {};
  const progressing = status.conditions?.find((c) => c.type === "Progressing");
  if (progressing?.reason === "ProgressDeadlineExceeded") {
    return {
      state: "failed",
      reason: "ProgressDeadlineExceeded",
      message: progressing.message ?? "the rollout did not progress in time",
    };
  }
  const desired = deployment.spec?.replicas ?? 1;
  if ((status.observedGeneration ?? 0) < (deployment.metadata.generation ?? 0))
    return { state: "progressing", why: "waiting for the deployment controller" };
  const updated = status.updatedReplicas ?? 0;
  if (updated < desired)
    return { state: "progressing", why: `${updated} of ${desired} new replicas created` };
  if ((status.replicas ?? 0) > updated)
    return {
      state: "progressing",
      why: `${(status.replicas ?? 0) - updated} old replicas pending termination`,
    };
  const available = status.availableReplicas ?? 0;
  if (available < updated)
    return { state: "progressing", why: `${available} of ${updated} updated replicas available` };
  if (desired > 0 && !slices.some((s) => s.endpoints?.some((e) => e.conditions?.ready)))
    return { state: "progressing", why: "waiting for a ready endpoint behind the Service" };
  return { state: "ready" };
}

/** Why a pod will not become ready, if waiting would not help. */
export function podFailure(
  pod: PodLike,
  now = Date.now(),
): { reason: string; message: string } | undefined {
  const scheduled = pod.status?.conditions?.find((c) => c.type === "PodScheduled");
  const since = Date.parse(scheduled?.lastTransitionTime ?? "") || now;
  if (
    scheduled?.status === "False" &&
    scheduled.reason === "Unschedulable" &&
    now - since >= UNSCHEDULABLE_GRACE_MS
  ) {
    return { reason: "Unschedulable", message: scheduled.message ?? "no node fits the pod" };
  }
  for (const c of pod.status?.containerStatuses ?? []) {
    const waiting = c.state?.waiting;
    if (waiting?.reason && FATAL_WAITING.has(waiting.reason)) {
      const last = c.lastState?.terminated;
      const detail =
        waiting.reason === "CrashLoopBackOff" && last
          ? `container ${c.name} exited with code ${last.exitCode ?? "?"}${last.reason && last.reason !== "Error" ? ` (${last.reason})` : ""}, restarted ${c.restartCount ?? 0} time${c.restartCount === 1 ? "" : "s"}`
          : (waiting.message ?? `container ${c.name} is waiting`);
      const reason = last?.reason === "OOMKilled" ? "OOMKilled" : waiting.reason;
      return { reason, message: detail };
    }
    // An OOM kill in the past of a container that runs again is history, not a failure.
    const terminated = c.state?.terminated ?? (c.ready ? undefined : c.lastState?.terminated);
    if (terminated?.reason === "OOMKilled") {
      return {
        reason: "OOMKilled",
        message: `container ${c.name} was killed for using too much memory`,
      };
    }
  }
  return undefined;
}

/** Restarts of a pod's containers. */
export function restartsOf(pod: PodLike): number {
  return (pod.status?.containerStatuses ?? []).reduce((n, c) => n + (c.restartCount ?? 0), 0);
}

export function podReady(pod: PodLike): boolean {
  return pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") ?? false;
}
