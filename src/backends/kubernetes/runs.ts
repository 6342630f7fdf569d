/**
 * Task runs on a cluster: one Job per run, made from the task environment's deployed revision
 * (its marker ConfigMap: code, runtime, spec, variables). `retries` becomes `backoffLimit`,
 * `timeout` `activeDeadlineSeconds`; the Job's name comes from the run's idempotency key, so a
 * resent request finds the run the first one created. The runtime runs the task once and
 * leaves its outcome (output, or the error with its stack) as the container's termination
 * message, which the record is read from. Finished Jobs go after a retention period; the
 * record of a finished run is kept apart (a small ConfigMap) when first read, so `caravan
 * runs` and RunOutput inputs still find it.
 */
import { CaravanError } from "../../errors.ts";
import { sha256 } from "../../sdk/stable.ts";
import {
  API_TOKEN_ENV,
  API_URL_ENV,
  RUNTIME_ENV,
  type RegisterOutcome,
  type RuntimeConfig,
  type TaskOutcome,
} from "../../runtime/protocol.ts";
import type { RunFilter, RunRecord, RunRequest, Scope, TaskSpec } from "../contract.ts";
import { ApiError, type KubeClient } from "./client.ts";
import { GATEWAY_NAME, RUN_TOKEN_KEY } from "./cluster-gateway.ts";
import type { Condition } from "./rollout.ts";
import {
  ANNOTATIONS,
  LABELS,
  POD_PATHS,
  environmentLabels,
  imageOf,
  podSettings,
  scopeLabels,
  selector,
  taskMarkerName,
  type KubeObject,
} from "./manifests.ts";

/** How long a finished run's Job stays (its result is kept apart, see `keep`). */
export const RUN_RETENTION_SECONDS = 24 * 3600;
/** Finished runs' results kept per namespace (the newest). */
export const KEPT_RESULTS = 500;
const RUN_LABEL = "caravan.dev/run";
const TASK_ANNOTATION = "caravan.dev/task";
const ARGS_ANNOTATION = "caravan.dev/args";
const CALLER_ANNOTATION = "caravan.dev/caller";

/** The ConfigMap a finished run's record is kept in. */
export const resultName = (job: string) => `${job}-result`;

const finished = (r: RunRecord) => r.status === "succeeded" || r.status === "failed";

/** The record a result ConfigMap keeps (undefined: not one, or unreadable). */
function keptRecord(m: KubeObject): RunRecord | undefined {
  const text = (m as { data?: Record<string, string> }).data?.run;
  try {
    return text ? (JSON.parse(text) as RunRecord) : undefined;
  } catch {
    return undefined;
  }
}

export type Job = KubeObject & {
  metadata: KubeObject["metadata"] & { creationTimestamp?: string };
  spec?: { template?: { metadata?: { labels?: Record<string, string> } } };
  status?: {
    active?: number;
    succeeded?: number;
    failed?: number;
    startTime?: string;
    completionTime?: string;
    conditions?: Condition[];
  };
};
type Pod = KubeObject & {
  metadata: KubeObject["metadata"] & { creationTimestamp?: string };
  status?: {
    containerStatuses?: {
      state?: { terminated?: { exitCode?: number; message?: string; finishedAt?: string } };
    }[];
  };
};

export class ClusterRuns {
  constructor(
    private readonly client: KubeClient,
    private readonly namespaceOf: (scope: Scope) => string,
    /** Where a list without a scope looks (the cluster gateway: its own namespace); all. */
    private readonly home?: string,
  ) {}

  async start(req: RunRequest, waitMs = 0): Promise<RunRecord> {
    const [envName] = req.task.split(".");
    const namespace = this.namespaceOf(req.scope);
    const marker = await this.client.get<KubeObject & { data?: Record<string, string> }>(
      "ConfigMap",
      namespace,
      taskMarkerName(envName!),
    );
    const where = `${req.scope.project}/${req.scope.domain}`;
    if (!marker?.data?.spec) {
      throw new CaravanError(
        "NOT_DEPLOYED",
        `cannot run ${req.task}: task environment "${envName}" is not deployed in ${where} (namespace ${namespace}); deploy it first (caravan deploy <file> ${envName} --backend kubernetes)`,
        { task: req.task },
      );
    }
    const registration = marker.metadata.annotations ?? {};
    if (registration[ANNOTATIONS.registration] === "failed") {
      throw new CaravanError(
        "NOT_DEPLOYED",
        `cannot run ${req.task}: revision ${marker.data.revision} of task environment "${envName}" in ${where} could not register its tasks (${registration[ANNOTATIONS.error] ?? "see caravan status"}); fix that and deploy it again`,
        { task: req.task },
      );
    }
    const spec = JSON.parse(marker.data.spec) as TaskSpec;
    const task = spec.tasks.find((t) => t.id === req.task);
    if (!task) {
      throw new CaravanError(
        "UNKNOWN_TASK",
        `${envName} (revision ${marker.data.revision}) has no task "${req.task}"; it has: ${spec.tasks.map((t) => t.id).join(", ") || "none"}`,
        { task: req.task },
      );
    }
    const name = `run-${sha256(`${where}|${req.requestId ?? crypto.randomUUID()}`).slice(0, 20)}`;
    const job = runJob({ kind: "run", req, task }, namespace, name, spec, marker.data);
    try {
      await this.client.call("POST", `/apis/batch/v1/namespaces/${namespace}/jobs`, {
        body: job,
      });
    } catch (e) {
      // The same request sent again: its run exists already.
      if (!(e instanceof ApiError && e.status === 409)) throw e;
    }
    return this.get(`${namespace}/${name}`, waitMs);
  }

  /**
   * A run by id (`<namespace>/<job>`), waiting up to `waitMs` for it to finish: read from its
   * Job, or once the Job is gone, from the result kept when it finished.
   */
  async get(id: string, waitMs = 0): Promise<RunRecord> {
    const [namespace, name] = id.split("/");
    if (!namespace || !name)
      throw new CaravanError("NO_SUCH_RUN", `"${id}" is not a run id of the kubernetes backend`);
    const deadline = Date.now() + waitMs;
    let delay = 100;
    for (;;) {
      const job = await this.client.get<Job>("Job", namespace, name);
      if (!job) {
        const kept = await this.client.get<KubeObject>("ConfigMap", namespace, resultName(name));
        const record = kept && keptRecord(kept);
        if (record) return record;
        throw new CaravanError(
          "NO_SUCH_RUN",
          `there is no run "${id}" in the cluster (the newest ${KEPT_RESULTS} finished runs of a namespace are kept, unless their environment was deleted; see caravan runs)`,
          { runId: id },
        );
      }
      const record = await this.recordOf(job);
      if (finished(record)) {
        await this.keep(job, record);
        return record;
      }
      if (Date.now() >= deadline) return record;
      await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(0, deadline - Date.now()))));
      delay = Math.min(1000, Math.round(delay * 1.5));
    }
  }

  /**
   * Runs newest first: the kept results (final, read as they are) and the Jobs that have
   * none yet (a finished one's result is kept on the way).
   */
  async list(scope: Scope | undefined, filter: RunFilter = {}): Promise<RunRecord[]> {
    const namespace = scope ? this.namespaceOf(scope) : this.home;
    const labels = scope ? selector(scopeLabels(scope)) : "app.kubernetes.io/managed-by=caravan";
    const [jobs, results] = await Promise.all([
      this.client.list<Job>("Job", namespace, `${labels},${RUN_LABEL}`),
      this.client.list<KubeObject>("ConfigMap", namespace, `${labels},${RUN_LABEL}`),
    ]);
    const kept = new Map<string, RunRecord>();
    for (const m of results.items) {
      const record = keptRecord(m);
      if (record) kept.set(record.id, record);
    }
    const candidates: { id: string; createdAt: string; task: string; job?: Job }[] = [
      ...[...kept.values()].map((r) => ({ id: r.id, createdAt: r.createdAt, task: r.task })),
      ...jobs.items
        .map((job) => ({
          id: `${job.metadata.namespace}/${job.metadata.name}`,
          createdAt: job.metadata.creationTimestamp ?? "",
          task: job.metadata.annotations?.[TASK_ANNOTATION] ?? "",
          job,
        }))
        .filter((c) => !kept.has(c.id)),
    ].sort((a, b) => b.createdAt.localeCompare(a.createdAt));
    const out: RunRecord[] = [];
    for (const c of candidates) {
      if (filter.task && c.task !== filter.task) continue;
      let record = kept.get(c.id);
      if (!record && c.job) {
        record = await this.recordOf(c.job);
        if (finished(record)) await this.keep(c.job, record);
      }
      if (!record || (filter.status && record.status !== filter.status)) continue;
      out.push(record);
      if (filter.limit && out.length >= filter.limit) break;
    }
    return out;
  }

  /**
   * Keeps a finished run's record (without logs) in a ConfigMap of its own, so it outlives
   * its Job (gone after RUN_RETENTION_SECONDS); labelled like the Job, so deleting the
   * environment removes it. Written once; the namespace keeps the newest KEPT_RESULTS.
   */
  private async keep(job: Job, record: RunRecord): Promise<void> {
    const { logs: _logs, ...kept } = record;
    const namespace = job.metadata.namespace!;
    try {
      await this.client.call("POST", `/api/v1/namespaces/${namespace}/configmaps`, {
        body: {
          apiVersion: "v1",
          kind: "ConfigMap",
          metadata: {
            name: resultName(job.metadata.name),
            namespace,
            labels: { ...job.metadata.labels },
          },
          data: { run: JSON.stringify(kept) },
        },
      });
    } catch (e) {
      if (e instanceof ApiError && e.status === 409) return; // kept already
      throw e;
    }
    const all = await this.client.list<KubeObject & { metadata: { creationTimestamp?: string } }>(
      "ConfigMap",
      namespace,
      `app.kubernetes.io/managed-by=caravan,${RUN_LABEL}`,
    );
    const oldest = all.items
      .sort((a, b) =>
        (b.metadata.creationTimestamp ?? "").localeCompare(a.metadata.creationTimestamp ?? ""),
      )
      .slice(KEPT_RESULTS);
    await Promise.all(
      oldest.map((m) => this.client.delete("ConfigMap", namespace, m.metadata.name)),
    );
  }

  private async recordOf(job: Job): Promise<RunRecord> {
    const labels = job.metadata.labels ?? {};
    const annotations = job.metadata.annotations ?? {};
    const status = job.status ?? {};
    const condition = (type: string) =>
      status.conditions?.find((c) => c.type === type && c.status === "True");
    const complete = condition("Complete") ?? condition("SuccessCriteriaMet");
    const failed = condition("Failed") ?? condition("FailureTarget");
    const runStatus = complete
      ? "succeeded"
      : failed
        ? "failed"
        : (status.active ?? 0) > 0
          ? "running"
          : "queued";
    const record: RunRecord = {
      id: `${job.metadata.namespace}/${job.metadata.name}`,
      project: labels[LABELS.project] ?? "",
      domain: labels[LABELS.domain] ?? "",
      environment: labels[LABELS.environment] ?? "",
      task: annotations[TASK_ANNOTATION] ?? "",
      revision: annotations[ANNOTATIONS.revision] ?? "",
      status: runStatus,
      args: JSON.parse(annotations[ARGS_ANNOTATION] ?? "[]") as unknown[],
      attempts: Math.max(1, (status.failed ?? 0) + (status.succeeded ?? 0) + (status.active ?? 0)),
      ...(annotations[CALLER_ANNOTATION] ? { caller: annotations[CALLER_ANNOTATION] } : {}),
      createdAt: job.metadata.creationTimestamp ?? "",
      ...(status.startTime ? { startedAt: status.startTime } : {}),
    };
    const finishedAt = status.completionTime ?? failed?.lastTransitionTime;
    if (runStatus === "succeeded" || runStatus === "failed") {
      if (finishedAt) record.finishedAt = finishedAt;
      if (record.startedAt && record.finishedAt)
        record.durationMs = Date.parse(record.finishedAt) - Date.parse(record.startedAt);
      const outcome = await this.outcomeOf(job);
      if (runStatus === "succeeded") record.output = outcome?.ok ? outcome.output : null;
      else
        record.error =
          outcome && !outcome.ok
            ? outcome.error
            : {
                name: failed?.reason === "DeadlineExceeded" ? "TimeoutError" : "Error",
                message: failed?.message ?? "the run's pod failed without an outcome",
              };
    }
    return record;
  }

  /** The outcome the last finished pod of the Job left as its termination message. */
  private async outcomeOf(job: Job): Promise<TaskOutcome | undefined> {
    return jobOutcome<TaskOutcome>(this.client, job);
  }
}

/**
 * What the last finished pod of a Job (a run or a registration) left as its termination
 * message: caravan's runtime writes its outcome there as JSON; anything else (the log's tail,
 * when the runtime could not write one) becomes an error.
 */
export async function jobOutcome<T extends TaskOutcome | RegisterOutcome>(
  client: KubeClient,
  job: Job,
): Promise<T | undefined> {
  // By the Job's uid: a Job made again under the same name has pods of its own.
  const uid = job.metadata.uid as string | undefined;
  const pods = await client.list<Pod>(
    "Pod",
    job.metadata.namespace,
    uid ? `batch.kubernetes.io/controller-uid=${uid}` : `job-name=${job.metadata.name}`,
  );
  const finished = pods.items
    .map((p) => p.status?.containerStatuses?.[0]?.state?.terminated)
    .filter((t): t is NonNullable<typeof t> => Boolean(t?.message))
    .sort((a, b) => (a.finishedAt ?? "").localeCompare(b.finishedAt ?? ""));
  const last = finished.at(-1);
  if (!last?.message) return undefined;
  try {
    return JSON.parse(last.message) as T;
  } catch {
    return { ok: false, error: { name: "Error", message: last.message.slice(0, 2000) } } as T;
  }
}

/**
 * What a task environment's Job does: run one task (a run), or load the code and check that
 * it registers the environment's tasks (a registration, at deploy).
 */
export type JobWork =
  | { kind: "run"; req: RunRequest; task: TaskSpec["tasks"][number] }
  | { kind: "register"; scope: Scope };

/** How long a registration may take: pulling the image and importing the code. */
export const REGISTRATION_TIMEOUT_SECONDS = 300;
/** A finished registration's Job stays this long (to be looked at), then goes. */
const REGISTRATION_RETENTION_SECONDS = 3600;

/** The Job of one run, or of a registration, from the environment's marker data. */
export function runJob(
  work: JobWork,
  namespace: string,
  name: string,
  spec: TaskSpec,
  marker: Record<string, string>,
): KubeObject {
  const envName = spec.name;
  const scope = work.kind === "run" ? work.req.scope : work.scope;
  const labels = {
    ...environmentLabels(scope, envName),
    ...(work.kind === "run"
      ? { [RUN_LABEL]: name }
      : { [LABELS.registration]: marker.revision ?? "" }),
  };
  const launch = JSON.parse(marker.launch ?? "{}") as Record<string, string>;
  const runtime: RuntimeConfig = {
    kind: work.kind,
    name: envName,
    project: scope.project,
    domain: scope.domain,
    entry: `${POD_PATHS.code}/${marker.entry}`,
    sourceRoot: POD_PATHS.workDir,
    port: 0,
    host: "0.0.0.0",
    endpoints: {},
    publicEndpoints: {},
    inputs: {},
    ...(work.kind === "run"
      ? { task: work.req.task, args: work.req.args }
      : { tasks: spec.tasks.map((t) => t.id) }),
  };
  const k8s = spec.kubernetes ?? {};
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name,
      namespace,
      labels,
      annotations: {
        [ANNOTATIONS.revision]: marker.revision ?? "",
        ...(work.kind === "run"
          ? {
              [TASK_ANNOTATION]: work.req.task,
              [ARGS_ANNOTATION]: JSON.stringify(work.req.args),
              ...(work.req.caller ? { [CALLER_ANNOTATION]: work.req.caller } : {}),
            }
          : {}),
      },
    },
    spec: {
      ...(work.kind === "run"
        ? {
            backoffLimit: work.task.retries ?? 0,
            ...(work.task.timeout ? { activeDeadlineSeconds: work.task.timeout } : {}),
            ttlSecondsAfterFinished: RUN_RETENTION_SECONDS,
          }
        : {
            backoffLimit: 0,
            activeDeadlineSeconds: REGISTRATION_TIMEOUT_SECONDS,
            ttlSecondsAfterFinished: REGISTRATION_RETENTION_SECONDS,
          }),
      template: {
        metadata: {
          labels: { ...k8s.podLabels, ...labels },
          annotations: { ...k8s.podAnnotations },
        },
        spec: {
          restartPolicy: "Never",
          ...podSettings(k8s),
          enableServiceLinks: false,
          containers: [
            {
              name: work.kind,
              // Markers written before the image was recorded: the spec's own reference.
              image: marker.image ?? imageOf(spec),
              command: ["node", `${POD_PATHS.runtime}/runtime/main.js`],
              workingDir: POD_PATHS.workDir,
              terminationMessagePolicy: "FallbackToLogsOnError",
              env: [
                ...Object.entries(launch).map(([n, value]) => ({ name: n, value })),
                { name: RUNTIME_ENV, value: JSON.stringify(runtime) },
                // The namespace's run token, where the marker gives the run API's URL.
                ...(launch[API_URL_ENV]
                  ? [
                      {
                        name: API_TOKEN_ENV,
                        valueFrom: { secretKeyRef: { name: GATEWAY_NAME, key: RUN_TOKEN_KEY } },
                      },
                    ]
                  : []),
                ...spec.secrets.map((s) => ({
                  name: s.envVar,
                  valueFrom: { secretKeyRef: { name: "caravan-secrets", key: s.key } },
                })),
              ],
              volumeMounts: [
                { name: "code", mountPath: POD_PATHS.code, readOnly: true },
                { name: "runtime", mountPath: POD_PATHS.runtime, readOnly: true },
              ],
            },
          ],
          volumes: [
            {
              name: "code",
              configMap: { name: marker.code, items: JSON.parse(marker.codeItems ?? "[]") },
            },
            {
              name: "runtime",
              configMap: { name: marker.runtime, items: JSON.parse(marker.runtimeItems ?? "[]") },
            },
          ],
        },
      },
    },
  };
}
