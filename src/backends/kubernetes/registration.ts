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
import type { KubeClient } from "./client.ts";
import { taskObjects, type KubeObject, type ManifestContext } from "./manifests.ts";
import { completionOf, startJob } from "./completion.ts";
import { REGISTRATION_TIMEOUT_SECONDS, jobOutcome, runJob } from "./runs.ts";

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
    failure = await completionOf(client, job, {
      timeoutSeconds: REGISTRATION_TIMEOUT_SECONDS,
      what: "pulling the image and importing the code",
      reason: async (seen) => {
        const outcome = await jobOutcome<RegisterOutcome>(client, seen);
        return outcome && !outcome.ok
          ? `${outcome.error.name}: ${outcome.error.message}`
          : undefined;
      },
    });
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
