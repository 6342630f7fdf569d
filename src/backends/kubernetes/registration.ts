/**
 * A task environment's deploy on a cluster: its marker, then a short registration Job (the
 * same pod a run gets, its runtime in kind "register") that loads the code in the image and
 * checks that it registers every task of the spec. The environment is ready only once that
 * Job completed, as a local task environment is once its first worker loaded: a bundle that
 * cannot load there (a package missing from the image, a task declared only on the deploying
 * machine) fails the deploy instead of every run. The marker records the outcome.
 */
import { CaravanError, headline, type ErrorCode } from "../../errors.ts";
import type { RegisterOutcome } from "../../runtime/protocol.ts";
import type { DeployRequest, TaskSpec } from "../contract.ts";
import { ApiError, type KubeClient } from "./client.ts";
import { taskObjects, type KubeObject, type ManifestContext } from "./manifests.ts";
import { adviceFor, podFailure, type PodLike } from "./rollout.ts";
import { REGISTRATION_TIMEOUT_SECONDS, jobOutcome, runJob, type Job } from "./runs.ts";

/** Extra time over the Job's own deadline before caravan stops waiting for it. */
const DEADLINE_SLACK_MS = 15_000;
/** First poll after this long, then backing off to POLL_MAX_MS. */
const POLL_FIRST_MS = 100;
const POLL_MAX_MS = 1_000;

type TaskRequest = DeployRequest & { spec: TaskSpec };

/** `<env>-register-<revision>`: one registration per revision (a Job name is at most 63). */
export function registrationJobName(env: string, revision: string): string {
  const suffix = `-register-${revision.slice(0, 10)}`;
  return `${env.slice(0, 63 - suffix.length).replace(/-+$/, "")}${suffix}`;
}

/** The registration Job of `req`'s revision, made from the marker a deploy writes. */
export function registrationJob(req: TaskRequest, ctx: ManifestContext): KubeObject {
  const marker = taskObjects(req, ctx)[0]!.data as Record<string, string>;
  const name = registrationJobName(req.name, req.revision);
  return runJob({ kind: "register", scope: req.scope }, ctx.namespace, name, req.spec, marker);
}

/**
 * Applies the marker (pending), runs the registration Job (or reads the one this revision
 * already has), and records its outcome on the marker; rejects with the reason it failed.
 */
export async function registerTasks(
  client: KubeClient,
  req: TaskRequest,
  ctx: ManifestContext,
  apply: (object: KubeObject) => Promise<void>,
): Promise<void> {
  for (const object of taskObjects(req, ctx)) await apply(object);
  const job = registrationJob(req, ctx);
  const where = `Job ${ctx.namespace}/${job.metadata.name}`;
  let failure: string | undefined;
  // The Job failed (a pod's error): APP_NOT_READY; caravan gave up on it, or the cluster
  // refused it: that error's code.
  let code: ErrorCode = "APP_NOT_READY";
  try {
    await startJob(client, job, req.force ?? false);
    failure = await outcomeOf(client, job);
  } catch (e) {
    if (!(e instanceof CaravanError)) throw e;
    failure = e.message;
    code = e.code;
  }
  if (failure === undefined) {
    for (const object of taskObjects(req, ctx, { state: "ready" })) await apply(object);
    return;
  }
  // Kept short on the marker (status shows it); the whole reason is the deploy's error.
  const error = headline(failure).slice(0, 1000);
  for (const object of taskObjects(req, ctx, { state: "failed", error })) await apply(object);
  throw new CaravanError(
    code,
    `task environment "${req.name}" could not register its tasks (${where}): ${failure}`,
    { job: job.metadata.name },
  );
}

/**
 * Creates the Job, unless this revision has one already: a finished or running one is read
 * (a redeploy of a stopped environment, or one interrupted while it waited); a failed one, or
 * any with --force, is replaced.
 */
async function startJob(client: KubeClient, job: KubeObject, force: boolean): Promise<void> {
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

/** Waits for the Job to finish: undefined once it completed, else why it failed. */
async function outcomeOf(client: KubeClient, job: KubeObject): Promise<string | undefined> {
  const { name, namespace } = job.metadata;
  const deadline = Date.now() + REGISTRATION_TIMEOUT_SECONDS * 1000 + DEADLINE_SLACK_MS;
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
        const outcome = await jobOutcome<RegisterOutcome>(client, seen);
        result =
          outcome && !outcome.ok
            ? `${outcome.error.name}: ${outcome.error.message}`
            : `${failed.reason ?? "Failed"}: ${failed.message ?? "its pod failed without saying why"}`;
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
      `not finished within ${REGISTRATION_TIMEOUT_SECONDS} s (pulling the image and importing the code); see kubectl describe job ${name} -n ${namespace}`,
  );
  return result;
}

function failedCondition(job: Job) {
  return job.status?.conditions?.find(
    (c) => (c.type === "Failed" || c.type === "FailureTarget") && c.status === "True",
  );
}

/** Polls `done` with backoff until it says true; past `deadline`, fails with `late()`. */
async function until(
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
