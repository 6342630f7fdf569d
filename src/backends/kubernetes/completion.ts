/**
 * Running a Job to its end, for what a deploy waits for (a task environment's registration, a
 * job): started once per name (a failed one, or any with --force, replaced), polled with
 * backoff until it completed or failed, failing fast on what waiting will not fix.
 */
import { CaravanError } from "../../errors.ts";
import { ApiError, type KubeClient } from "./client.ts";
import type { KubeObject } from "./manifests.ts";
import { adviceFor, podFailure, type PodLike } from "./rollout.ts";
import type { Job } from "./runs.ts";

/** Extra time over the Job's own deadline before caravan stops waiting for it. */
const DEADLINE_SLACK_MS = 15_000;
/** First poll after this long, then backing off to POLL_MAX_MS. */
const POLL_FIRST_MS = 100;
const POLL_MAX_MS = 1_000;

/**
 * Creates the Job, unless this revision has one already: a finished or running one is read
 * (a redeploy of a stopped environment, or one interrupted while it waited); a failed one, or
 * any with --force, is replaced.
 */
export async function startJob(client: KubeClient, job: KubeObject, force: boolean): Promise<void> {
  const { name, namespace } = job.metadata;
  const existing = await client.get<Job>("Job", namespace, name);
  if (existing && (force || failedCondition(existing))) {
    await client.delete("Job", namespace, name);
    // Deleted in the background: the Job object goes at once, its pods after it.
    await until(
      async () => !(await client.get("Job", namespace, name)),
      Date.now() + 30_000,
      () => `the previous Job ${namespace}/${name} was still being deleted after 30 s`,
    );
  } else if (existing) return;
  try {
    await client.call("POST", `/apis/batch/v1/namespaces/${namespace}/jobs`, { body: job });
  } catch (e) {
    // Created meanwhile by another deploy of the same revision: wait for that one.
    if (!(e instanceof ApiError && e.status === 409)) throw e;
  }
}

/** How to wait for a Job, and what its failure says. */
export interface CompletionOptions {
  /** The Job's own deadline (caravan waits a little longer). */
  timeoutSeconds: number;
  /** What takes the time, for the message when it runs out. */
  what: string;
  /** Why a failed Job failed, in its own words (its outcome), if it says. */
  reason?: (job: Job) => Promise<string | undefined>;
}

/** Waits for the Job to finish: undefined once it completed, else why it failed. */
export async function completionOf(
  client: KubeClient,
  job: KubeObject,
  opts: CompletionOptions,
): Promise<string | undefined> {
  const { name, namespace } = job.metadata;
  const deadline = Date.now() + opts.timeoutSeconds * 1000 + DEADLINE_SLACK_MS;
  let result: string | undefined;
  await until(
    async () => {
      const seen = await client.get<Job>("Job", namespace, name);
      if (!seen) throw new CaravanError("APP_NOT_READY", `the Job disappeared (deleted?)`);
      const conditions = seen.status?.conditions ?? [];
      const holds = (type: string) =>
        conditions.some((c) => c.type === type && c.status === "True");
      if (holds("Complete") || holds("SuccessCriteriaMet")) return true;
      const failed = failedCondition(seen);
      if (failed) {
        result =
          (await opts.reason?.(seen)) ??
          `${failed.reason ?? "Failed"}: ${failed.message ?? "its pod failed without saying why"}`;
        return true;
      }
      // What waiting will not fix (an image that cannot be pulled, a missing Secret): fail
      // now, and remove the Job so that the next deploy starts afresh.
      const uid = seen.metadata.uid as string | undefined;
      if (uid) {
        const pods = await client.list<PodLike>(
          "Pod",
          namespace,
          `batch.kubernetes.io/controller-uid=${uid}`,
        );
        for (const pod of pods.items) {
          const stuck = podFailure(pod);
          if (!stuck) continue;
          await client.delete("Job", namespace, name);
          const advice = adviceFor(stuck.reason);
          result = `${stuck.reason}: ${stuck.message}${advice ? ` (${advice})` : ""}`;
          return true;
        }
      }
      return false;
    },
    deadline,
    () =>
      `not finished within ${opts.timeoutSeconds} s (${opts.what}); see kubectl describe job ${name} -n ${namespace}`,
  );
  return result;
}

export function failedCondition(job: Job) {
  return job.status?.conditions?.find(
    (c) => (c.type === "Failed" || c.type === "FailureTarget") && c.status === "True",
  );
}

/** Polls `done` with backoff until it says true; past `deadline`, fails with `late()`. */
export async function until(
  done: () => Promise<boolean>,
  deadline: number,
  late: () => string,
): Promise<void> {
  let delay = POLL_FIRST_MS;
  while (!(await done())) {
    if (Date.now() > deadline) throw new CaravanError("START_TIMEOUT", late());
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(POLL_MAX_MS, Math.round(delay * 1.5));
  }
}
