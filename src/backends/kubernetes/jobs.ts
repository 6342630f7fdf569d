/**
 * Jobs (JobEnvironment) on a cluster: a run is a Job that must complete before the job's
 * dependents are applied. The Job carries the job's record (revision, dependencies), so the
 * newest Job of a job says whether its revision already succeeded (then a deploy is
 * unchanged). `retries` are the Job's `backoffLimit`; a job keeps its last few Jobs as its
 * history (`status` lists them).
 */
import { CaravanError } from "../../errors.ts";
import type { DeployRequest, JobRun, JobSpec, Scope } from "../contract.ts";
import type { KubeClient } from "./client.ts";
import { completionOf, failedCondition, startJob } from "./completion.ts";
import {
  LABELS,
  environmentLabels,
  jobName,
  jobObjects,
  selector,
  type KubeObject,
  type ManifestContext,
} from "./manifests.ts";
import { jobOutcome, type Job } from "./runs.ts";
import { ANNOTATIONS } from "./manifests.ts";

/** Jobs kept per job (its history); older ones are deleted after a run. */
const KEPT_JOBS = 5;

type JobRequest = DeployRequest & { spec: JobSpec };

/**
 * Applies the job's inputs and runs its Job (or reads the one its revision has: a completed
 * one counts); resolves once it completed, rejects (JOB_FAILED) with why it failed.
 */
export async function runJobEnvironment(
  client: KubeClient,
  req: JobRequest,
  ctx: ManifestContext,
  apply: (object: KubeObject) => Promise<void>,
): Promise<void> {
  // --force runs it again under a name of its own: the finished Job stays in the history.
  const [inputs, job] = jobObjects(req, ctx, req.force ? Date.now().toString(36) : undefined);
  await apply(inputs!);
  await waitFor(client, job!, req.spec, req.name);
  await prune(client, ctx.namespace, req.scope, req.name);
}

/** `caravan job rerun`: a copy of the job's newest Job, under a new name, run to its end. */
export async function rerunJobEnvironment(
  client: KubeClient,
  namespace: string,
  scope: Scope,
  name: string,
): Promise<string> {
  const jobs = await jobsOf(client, namespace, scope, name);
  const last = jobs[0];
  if (!last) {
    throw new CaravanError(
      "NOT_DEPLOYED",
      `"${name}" is not a deployed job in ${scope.project}/${scope.domain} (namespace ${namespace}); deploy it first`,
    );
  }
  const revision = last.metadata.annotations?.[ANNOTATIONS.revision] ?? "";
  const spec = last.spec as Record<string, any>;
  // What the API server added to the first one (its selector, the labels tying pods to it).
  const own = (labels: Record<string, string> = {}) =>
    Object.fromEntries(
      Object.entries(labels).filter(([k]) => !/(^|\/)(controller-uid|job-name)$/.test(k)),
    );
  const copy: KubeObject = {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: jobName(name, revision, Date.now().toString(36)),
      namespace,
      labels: last.metadata.labels ?? {},
      annotations: {
        ...last.metadata.annotations,
        [ANNOTATIONS.deployedAt]: new Date().toISOString(),
      },
    },
    spec: {
      backoffLimit: spec.backoffLimit,
      activeDeadlineSeconds: spec.activeDeadlineSeconds,
      template: {
        metadata: {
          labels: own(spec.template?.metadata?.labels),
          annotations: spec.template?.metadata?.annotations ?? {},
        },
        spec: spec.template?.spec,
      },
    },
  };
  const timeout = Number(spec.activeDeadlineSeconds) || 600;
  await waitFor(client, copy, { timeouts: { run: timeout }, retries: 0 }, name);
  await prune(client, namespace, scope, name);
  return revision;
}

/** A job's Jobs, newest first. */
export async function jobsOf(
  client: KubeClient,
  namespace: string,
  scope: Scope,
  name: string,
): Promise<Job[]> {
  const list = await client.list<Job>(
    "Job",
    namespace,
    `${selector(environmentLabels(scope, name))},${LABELS.kind}=job`,
  );
  return list.items.sort((a, b) =>
    String(b.metadata.creationTimestamp ?? "").localeCompare(
      String(a.metadata.creationTimestamp ?? ""),
    ),
  );
}

/** A Job as one of the job's runs. */
export function jobRunOf(job: Job): JobRun {
  const status = job.status ?? {};
  const done = status.conditions?.find(
    (c) => (c.type === "Complete" || c.type === "SuccessCriteriaMet") && c.status === "True",
  );
  const failed = failedCondition(job);
  const startedAt = status.startTime ?? String(job.metadata.creationTimestamp ?? "");
  const finishedAt = status.completionTime ?? failed?.lastTransitionTime;
  return {
    revision: job.metadata.annotations?.[ANNOTATIONS.revision] ?? "",
    attempt: Math.max(1, (status.failed ?? 0) + (status.succeeded ?? 0) + (status.active ?? 0)),
    status: done ? "succeeded" : failed ? "failed" : "running",
    ...(failed ? { error: `${failed.reason ?? "Failed"}: ${failed.message ?? ""}` } : {}),
    startedAt,
    ...(finishedAt ? { finishedAt } : {}),
    ...(finishedAt && startedAt
      ? { durationMs: Date.parse(finishedAt) - Date.parse(startedAt) }
      : {}),
  };
}

async function waitFor(
  client: KubeClient,
  job: KubeObject,
  spec: Pick<JobSpec, "timeouts" | "retries">,
  name: string,
): Promise<void> {
  await startJob(client, job, false);
  const failure = await completionOf(client, job, {
    timeoutSeconds: spec.timeouts.run * (spec.retries + 1),
    what: `the job's ${spec.retries + 1} attempt(s), timeouts.run each`,
    // The pod's termination message: the runtime's error for a function job, else the last
    // lines a command printed (FallbackToLogsOnError).
    reason: async (seen) => {
      const outcome = await jobOutcome(client, seen);
      return outcome && !outcome.ok ? outcome.error.message : undefined;
    },
  });
  if (failure !== undefined) {
    throw new CaravanError(
      "JOB_FAILED",
      `job ${name} failed (Job ${job.metadata.namespace}/${job.metadata.name}): ${failure}`,
      { job: name },
    );
  }
}

async function prune(client: KubeClient, namespace: string, scope: Scope, name: string) {
  const jobs = await jobsOf(client, namespace, scope, name);
  await Promise.all(
    jobs.slice(KEPT_JOBS).map((j) => client.delete("Job", namespace, j.metadata.name)),
  );
}
