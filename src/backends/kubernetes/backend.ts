/**
 * The Kubernetes backend: the same contract as the local control plane, with the cluster as
 * the store (no daemon, no database). Every object carries caravan's labels; an app's
 * Deployment carries its revision, dependencies and desired state as annotations, so status,
 * unchanged checks and teardown order are read back from the cluster.
 *
 * Order is the engine's job (Kubernetes has none between workloads): `deploy` resolves only
 * once the rollout is complete and the Service has a ready endpoint, or rejects, fast, with
 * the reason a user needs. Watching is polling with backoff (long watches are known to go
 * silent in client libraries).
 */
import { createInterface } from "node:readline";
import { CaravanError, headline } from "../../errors.ts";
import type { ResolvedConfig } from "../../sdk/config.ts";
import type {
  Backend,
  Change,
  DeployRequest,
  DeployResult,
  Endpoints,
  EnvironmentState,
  EnvironmentStatus,
  LogsOptions,
  Scope,
} from "../contract.ts";
import { ApiError, KubeClient, resourcePath, type ResourceKind } from "./client.ts";
import { teardownOrder } from "../teardown.ts";
import { NamespaceWatch, type Deployment, type Pod } from "./watch.ts";
import { codeFiles, runtimeFiles, runtimeHashOf, snapshotFiles } from "./content.ts";
import {
  ANNOTATIONS,
  LABELS,
  MANAGED_BY,
  POD_PATHS,
  appObjects,
  contentConfigMap,
  endpointOf,
  environmentLabels,
  namespaceFor,
  namespaceObject,
  scopeLabels,
  selector,
  taskMarkerName,
  taskObjects,
  type KubeObject,
  type ManifestContext,
} from "./manifests.ts";
import {
  adviceFor,
  podReady,
  restartsOf,
  rolloutState,
  type EndpointSliceLike,
  type RolloutState,
} from "./rollout.ts";

/** The Secret a project/domain's secrets live in (pods reference it with secretKeyRef). */
export const SECRET_NAME = "caravan-secrets";
/** First poll of a rollout after this long, then backing off to POLL_MAX_MS. */
const POLL_FIRST_MS = 100;
const POLL_MAX_MS = 1_000;
/** Extra time over an app's start timeout before caravan gives up on a rollout itself. */
const DEADLINE_SLACK_MS = 15_000;
/** How long delete waits for an environment's pods to be gone before it goes on. */
const DELETE_WAIT_MS = 60_000;

/** One environment as the cluster records it. */
interface Recorded {
  name: string;
  namespace: string;
  scope: Scope;
  kind: "app" | "task";
  revision: string;
  dependsOn: string[];
  desired: "running" | "stopped";
  deployedAt: string;
  deployment?: Deployment;
}

export class KubernetesBackend implements Backend {
  readonly name = "kubernetes";
  /** Namespaces applied by this backend object (each once per process). */
  private readonly namespaces = new Map<string, Promise<void>>();
  /** The content ConfigMaps of each namespace, and those being applied, by name. */
  private readonly content = new Map<string, Promise<Map<string, Promise<void>>>>();
  /** One rollout poll loop per namespace. */
  private readonly watches = new Map<string, NamespaceWatch>();
  /** What each namespace held when first asked, for unchanged checks: one list, not a GET per app. */
  private readonly recorded = new Map<string, Promise<Map<string, Recorded>>>();

  constructor(
    readonly client: KubeClient,
    private readonly config: Pick<ResolvedConfig, "kubernetes">,
  ) {}

  namespaceOf(scope: Scope): string {
    try {
      return namespaceFor(scope, this.config.kubernetes?.namespace);
    } catch (e) {
      throw new CaravanError("CONFIG", (e as Error).message);
    }
  }

  endpointsOf(scope: Scope, name: string): Endpoints {
    // No public exposure yet: both are the Service's in-cluster address.
    const url = endpointOf(name, this.namespaceOf(scope));
    return { endpoint: url, internalEndpoint: url };
  }

  /** Endpoints are deterministic: known before anything is applied. */
  async reserve(scope: Scope, names: string[]): Promise<Record<string, Endpoints>> {
    return Object.fromEntries(names.map((n) => [n, this.endpointsOf(scope, n)]));
  }

  async deploy(req: DeployRequest): Promise<DeployResult> {
    const namespace = this.namespaceOf(req.scope);
    const before = (await this.recordedIn(namespace)).get(req.name);
    const endpoints = req.kind === "app" ? this.endpointsOf(req.scope, req.name) : {};
    if (before && !req.force && isUnchanged(before, req)) {
      return { status: "unchanged", revision: req.revision, ...endpoints };
    }
    await this.ensureNamespace(namespace, req.scope);
    const { ctx, content } = this.contentOf(req, namespace);
    await this.upload(req, namespace, content);
    if (req.spec.kind === "task") {
      // Ready once its code is stored and its tasks recorded.
      for (const object of taskObjects(req, ctx)) await this.apply(object, req.name);
      return { status: "ready", revision: req.revision };
    }
    // Independent objects: one round trip for all (a pod waits for its inputs ConfigMap anyway).
    await Promise.all(
      appObjects({ ...req, spec: req.spec }, ctx).map((o) => this.apply(o, req.name)),
    );
    await this.awaitRollout(req, namespace);
    return { status: "ready", revision: req.revision, ...endpoints };
  }

  async status(scope?: Scope): Promise<EnvironmentStatus[]> {
    const namespace = scope ? this.namespaceOf(scope) : undefined;
    const managed = scope ? selector(scopeLabels(scope)) : `${MANAGED_BY}=caravan`;
    const [deployments, markers, pods, slices] = await Promise.all([
      this.client.list<Deployment>("Deployment", namespace, managed),
      this.client.list<KubeObject>("ConfigMap", namespace, `${managed},${LABELS.kind}=task`),
      this.client.list<Pod>("Pod", namespace, managed),
      this.client.list<EndpointSliceLike & { metadata: KubeObject["metadata"] }>(
        "EndpointSlice",
        namespace,
        managed,
      ),
    ]);
    const out: EnvironmentStatus[] = [];
    for (const d of deployments.items) {
      const r = recordOf(d);
      if (!r) continue;
      const key = (o: { metadata: { namespace?: string; labels?: Record<string, string> } }) =>
        o.metadata.namespace === r.namespace && o.metadata.labels?.[LABELS.environment] === r.name;
      const own = pods.items.filter(key);
      const current = own.filter((p) => p.metadata.labels?.[LABELS.revision] === r.revision);
      const ownSlices = slices.items.filter(
        (s) =>
          s.metadata.namespace === r.namespace &&
          s.metadata.labels?.["kubernetes.io/service-name"] === r.name,
      );
      const rollout = rolloutState(d, current, ownSlices);
      const { state, error } = stateOf(r, rollout, d);
      out.push({
        project: r.scope.project,
        domain: r.scope.domain,
        name: r.name,
        kind: "app",
        state,
        revision: r.revision,
        restarts: own.reduce((n, p) => n + restartsOf(p), 0),
        pids: [],
        instances: own.map((p) => ({
          id: p.metadata.name,
          ready: podReady(p),
          restarts: restartsOf(p),
          ...(p.spec?.nodeName ? { node: p.spec.nodeName } : {}),
        })),
        dependsOn: r.dependsOn,
        ...(error ? { error } : {}),
        updatedAt: r.deployedAt,
        replicas: d.status?.readyReplicas ?? 0,
        ...this.endpointsOf(r.scope, r.name),
      });
    }
    for (const m of markers.items) {
      const r = recordOf(m);
      if (!r) continue;
      out.push({
        project: r.scope.project,
        domain: r.scope.domain,
        name: r.name,
        kind: "task",
        state: r.desired === "stopped" ? "stopped" : "ready",
        revision: r.revision,
        restarts: 0,
        pids: [],
        instances: [],
        dependsOn: r.dependsOn,
        updatedAt: r.deployedAt,
      });
    }
    return out.sort((a, b) =>
      `${a.project}/${a.domain}/${a.name}` < `${b.project}/${b.domain}/${b.name}` ? -1 : 1,
    );
  }

  stop(scope: Scope, names: string[], opts: { cascade?: boolean } = {}): Promise<string[]> {
    return this.takeDown(scope, names, opts, false);
  }

  delete(scope: Scope, names: string[], opts: { cascade?: boolean } = {}): Promise<string[]> {
    return this.takeDown(scope, names, opts, true);
  }

  async *logs(scope: Scope, name: string, opts: LogsOptions = {}): AsyncIterable<string> {
    const namespace = this.namespaceOf(scope);
    const pods = await this.client.list<Pod>(
      "Pod",
      namespace,
      selector(environmentLabels(scope, name)),
    );
    if (!pods.items.length) {
      const known = (await this.recordedIn(namespace, true)).has(name);
      throw new CaravanError(
        known ? "NOT_FOUND" : "NOT_DEPLOYED",
        known
          ? `${name} has no pods in namespace ${namespace} (stopped? caravan status)`
          : `"${name}" is not deployed in ${scope.project}/${scope.domain} (namespace ${namespace}; see caravan status)`,
      );
    }
    const many = pods.items.length > 1;
    for (const pod of pods.items) {
      let res;
      try {
        res = await this.client.stream(
          `/api/v1/namespaces/${namespace}/pods/${pod.metadata.name}/log`,
          {
            container: "app",
            ...(opts.tail !== undefined ? { tailLines: opts.tail } : {}),
            ...(opts.follow && !many ? { follow: true } : {}),
          },
          opts.signal,
        );
      } catch (e) {
        const why = e instanceof ApiError ? e.message : (e as Error).message;
        throw new CaravanError(
          "NOT_FOUND",
          `the logs of ${name} (pod ${pod.metadata.name}) cannot be read: ${why}`,
        );
      }
      for await (const line of createInterface({ input: res, crlfDelay: Infinity })) {
        yield many ? `[${pod.metadata.name}] ${line}` : line;
      }
    }
  }

  async close(): Promise<void> {
    this.client.close();
  }

  // --- internals ---

  private async apply(object: KubeObject, env: string): Promise<void> {
    try {
      await this.client.apply(object);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      throw new CaravanError(
        "CLUSTER_REJECTED",
        `${env}: the cluster refused ${object.kind} ${object.metadata.namespace ? `${object.metadata.namespace}/` : ""}${object.metadata.name}: ${e.message}`,
        { kind: object.kind, name: object.metadata.name, status: e.status, reason: e.reason },
      );
    }
  }

  private ensureNamespace(namespace: string, scope: Scope): Promise<void> {
    let done = this.namespaces.get(namespace);
    if (!done) {
      done = this.apply(namespaceObject(namespace, scope), namespace);
      this.namespaces.set(namespace, done);
      done.catch(() => this.namespaces.delete(namespace));
    }
    return done;
  }

  /** The request's content-addressed ConfigMaps and what the manifests refer to. Reads files only. */
  private contentOf(
    req: DeployRequest,
    namespace: string,
  ): { ctx: ManifestContext; content: KubeObject[] } {
    const labels = environmentLabels(req.scope, req.name);
    // The bundle and the runtime are the same for every environment of a deploy: one
    // ConfigMap each per namespace, shared (and collected when nothing refers to them).
    const shared = scopeLabels(req.scope);
    const { files: code, entry } = codeFiles(req.code);
    const codeMap = contentConfigMap(
      `caravan-code-${req.code.hash}`,
      namespace,
      shared,
      "code",
      code,
    );
    const content = [codeMap.object];
    const ctx: ManifestContext = {
      namespace,
      code: { name: codeMap.object.metadata.name, items: codeMap.items },
      runtime: { name: "", items: [] },
      inputs: { ...req.inputs },
      entry,
      secretName: SECRET_NAME,
      now: new Date().toISOString(),
      ...(this.config.kubernetes?.registry ? { registry: this.config.kubernetes.registry } : {}),
    };
    if (req.spec.kind === "task" || req.spec.serveKind !== "command") {
      const runtime = contentConfigMap(
        `caravan-runtime-${runtimeHashOf(req.code)}`,
        namespace,
        shared,
        "runtime",
        runtimeFiles(req.code),
      );
      content.push(runtime.object);
      ctx.runtime = { name: runtime.object.metadata.name, items: runtime.items };
    }
    if (req.files) {
      const files = contentConfigMap(
        `${req.name}-files-${req.files.hash}`,
        namespace,
        labels,
        "files",
        snapshotFiles(req.files.dir),
      );
      content.push(files.object);
      ctx.files = { name: files.object.metadata.name, items: files.items, localDir: req.files.dir };
      // File/Dir inputs point into the snapshot: in a pod, into its mount.
      for (const [k, v] of Object.entries(ctx.inputs))
        if (v.startsWith(req.files.dir))
          ctx.inputs[k] = POD_PATHS.files + v.slice(req.files.dir.length);
    }
    return { ctx, content };
  }

  /**
   * Applies the content ConfigMaps the namespace lacks (immutable and named by content: one
   * that exists holds these bytes). The namespace's content is listed once per backend
   * object, and each ConfigMap applied once, however many environments share it.
   */
  private async upload(req: DeployRequest, namespace: string, content: KubeObject[]) {
    let existing = this.content.get(namespace);
    if (!existing) {
      existing = this.client
        .list<KubeObject>(
          "ConfigMap",
          namespace,
          `${selector(scopeLabels(req.scope))},${LABELS.content}`,
        )
        .then((l) => new Map(l.items.map((m) => [m.metadata.name, Promise.resolve()])));
      this.content.set(namespace, existing);
      existing.catch(() => this.content.delete(namespace));
    }
    const known = await existing;
    await Promise.all(
      content.map((m) => {
        let applied = known.get(m.metadata.name);
        if (!applied) {
          applied = this.apply(m, req.name);
          known.set(m.metadata.name, applied);
          applied.catch(() => known.delete(m.metadata.name));
        }
        return applied;
      }),
    );
  }

  /**
   * Deletes the namespace's shared content ConfigMaps that no Deployment or task environment
   * refers to any more (after a delete: older revisions' ReplicaSets may still use them until
   * then).
   */
  private async collectContent(namespace: string, scope: Scope): Promise<void> {
    const managed = selector(scopeLabels(scope));
    const [deployments, maps] = await Promise.all([
      this.client.list<Deployment>("Deployment", namespace, managed),
      this.client.list<KubeObject>("ConfigMap", namespace, managed),
    ]);
    const used = new Set<string>();
    for (const d of deployments.items) {
      const volumes = ((d.spec as any)?.template?.spec?.volumes ?? []) as {
        configMap?: { name: string };
      }[];
      for (const v of volumes) if (v.configMap) used.add(v.configMap.name);
    }
    for (const m of maps.items) {
      const data = (m as { data?: Record<string, string> }).data;
      if (m.metadata.labels?.[LABELS.kind] === "task" && data) {
        if (data.code) used.add(data.code);
        if (data.runtime) used.add(data.runtime);
      }
    }
    const shared = maps.items.filter(
      (m) =>
        m.metadata.labels?.[LABELS.content] &&
        !m.metadata.labels[LABELS.environment] &&
        !used.has(m.metadata.name),
    );
    await Promise.all(
      shared.map((m) => this.client.delete("ConfigMap", namespace, m.metadata.name)),
    );
    this.content.delete(namespace);
  }

  /** The objects a deploy of `req` writes, content first, as `deploy` applies them. */
  private objectsOf(req: DeployRequest, namespace: string): KubeObject[] {
    const { ctx, content } = this.contentOf(req, namespace);
    const own =
      req.spec.kind === "task"
        ? taskObjects(req, ctx)
        : appObjects({ ...req, spec: req.spec }, ctx);
    return [...content, ...own];
  }

  async preview(req: DeployRequest): Promise<Change> {
    const namespace = this.namespaceOf(req.scope);
    const before = (await this.recordedIn(namespace)).get(req.name);
    const from = before ? { from: before.revision } : {};
    if (before && !req.force && isUnchanged(before, req))
      return { action: "unchanged", ...from, to: req.revision, writes: [] };
    const action = !before ? "create" : before.revision === req.revision ? "start" : "update";
    const objects = this.objectsOf(req, namespace);
    const writes = objects.map((o) => `${o.kind} ${namespace}/${o.metadata.name}`);
    const hasNamespace = await this.client.get("Namespace", undefined, namespace);
    if (!hasNamespace) writes.unshift(`Namespace ${namespace}`);
    try {
      // A server-side dry run: admission, defaulting and strict validation, nothing stored.
      // Without the namespace (it is created by the deploy) only it can be checked.
      if (!hasNamespace)
        await this.client.apply(namespaceObject(namespace, req.scope), { dryRun: true });
      else for (const o of objects) await this.client.apply(o, { dryRun: true });
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      return { action, ...from, to: req.revision, writes, error: e.message };
    }
    return { action, ...from, to: req.revision, writes };
  }

  /** Waits for the rollout of `req.revision` to be ready, or fails with the reason. */
  private async awaitRollout(req: DeployRequest, namespace: string): Promise<void> {
    const startSeconds = req.spec.kind === "app" ? req.spec.timeouts.start : 60;
    const deadline = Date.now() + startSeconds * 1000 + DEADLINE_SLACK_MS;
    await this.watchOf(namespace, req.scope).until(async (seen) => {
      const deployment = seen.deployment(req.name);
      if (!deployment) {
        throw new CaravanError(
          "APP_NOT_READY",
          `${req.name}: its Deployment in namespace ${namespace} disappeared during the rollout (deleted by someone else?)`,
        );
      }
      if (deployment.metadata.annotations?.[ANNOTATIONS.revision] !== req.revision) {
        throw new CaravanError(
          "APP_NOT_READY",
          `${req.name}: another deploy replaced revision ${req.revision} with ${deployment.metadata.annotations?.[ANNOTATIONS.revision]} during its rollout`,
        );
      }
      const last = rolloutState(
        deployment,
        seen.pods(req.name, req.revision),
        seen.slices(req.name),
      );
      if (last.state === "ready") return true;
      if (last.state === "failed") {
        const tail = last.pod ? await this.lastLogLines(namespace, last.pod) : "";
        const advice = adviceFor(last.reason);
        throw new CaravanError(
          last.reason === "ProgressDeadlineExceeded" ? "START_TIMEOUT" : "APP_NOT_READY",
          `${last.reason}: ${last.message}${advice ? ` (${advice})` : ""}${tail}`,
          { reason: last.reason, ...(last.pod ? { pod: last.pod } : {}) },
        );
      }
      if (Date.now() > deadline) {
        throw new CaravanError(
          "START_TIMEOUT",
          `${req.name} was not ready within ${startSeconds} s (timeouts.start): ${last.why}`,
        );
      }
      return false;
    });
  }

  private watchOf(namespace: string, scope: Scope): NamespaceWatch {
    let watch = this.watches.get(namespace);
    if (!watch) {
      watch = new NamespaceWatch(this.client, namespace, selector(scopeLabels(scope)));
      this.watches.set(namespace, watch);
    }
    return watch;
  }

  /** The last lines a failed pod wrote, for the error (empty when the cluster has none). */
  private async lastLogLines(namespace: string, pod: string): Promise<string> {
    for (const previous of [true, false]) {
      try {
        const res = await this.client.stream(`/api/v1/namespaces/${namespace}/pods/${pod}/log`, {
          container: "app",
          tailLines: 20,
          ...(previous ? { previous: true } : {}),
        });
        const lines: string[] = [];
        for await (const line of createInterface({ input: res, crlfDelay: Infinity }))
          lines.push(line);
        if (lines.length) return `\nlast log lines of pod ${pod}:\n${lines.join("\n")}`;
      } catch {
        // no logs (not started, or a cluster without kubelets' logs): say nothing
      }
    }
    return "";
  }

  /**
   * What the namespace holds, listed once per backend object: the engine deploys each
   * environment once, so an unchanged deploy of many apps costs two list calls, not a GET each.
   */
  private recordedIn(namespace: string, fresh = false): Promise<Map<string, Recorded>> {
    let listing = fresh ? undefined : this.recorded.get(namespace);
    if (!listing) {
      listing = (async () => {
        const managed = `${MANAGED_BY}=caravan`;
        const [deployments, markers] = await Promise.all([
          this.client.list<Deployment>("Deployment", namespace, managed),
          this.client.list<KubeObject>("ConfigMap", namespace, `${managed},${LABELS.kind}=task`),
        ]);
        const out = new Map<string, Recorded>();
        for (const o of [...deployments.items, ...markers.items]) {
          const r = recordOf(o);
          if (r) out.set(r.name, r);
        }
        return out;
      })();
      this.recorded.set(namespace, listing);
      listing.catch(() => this.recorded.delete(namespace));
    }
    return listing;
  }

  private async takeDown(
    scope: Scope,
    names: string[],
    opts: { cascade?: boolean },
    forget: boolean,
  ): Promise<string[]> {
    const namespace = this.namespaceOf(scope);
    const recorded = await this.recordedIn(namespace, true);
    const order = teardownOrder(
      scope,
      [...recorded.values()].map((r) => ({ ...r, running: r.desired === "running" })),
      names,
      {
        cascade: opts.cascade ?? false,
        verb: forget ? "delete" : "stop",
        where: `namespace ${namespace}`,
      },
    );
    for (const name of order) {
      const r = recorded.get(name)!;
      if (forget) await this.deleteEnvironment(scope, namespace, r);
      else await this.stopEnvironment(namespace, r);
    }
    if (forget) await this.collectContent(namespace, scope);
    this.recorded.delete(namespace);
    return order;
  }

  /** Scales an app to zero and records that it is stopped (its definition stays). */
  private async stopEnvironment(namespace: string, r: Recorded): Promise<void> {
    const kind: ResourceKind = r.kind === "app" ? "Deployment" : "ConfigMap";
    const name = r.kind === "app" ? r.name : taskMarkerName(r.name);
    await this.client.call("PATCH", resourcePath(kind, namespace, name), {
      body: {
        metadata: { annotations: { [ANNOTATIONS.desired]: "stopped" } },
        ...(r.kind === "app" ? { spec: { replicas: 0 } } : {}),
      },
      contentType: "application/merge-patch+json",
    });
    if (r.kind === "app") await this.waitForPods(namespace, r);
  }

  /** Removes every object of the environment (found by its labels), then waits for its pods. */
  private async deleteEnvironment(scope: Scope, namespace: string, r: Recorded): Promise<void> {
    const labels = selector(environmentLabels(scope, r.name));
    for (const kind of [
      "Deployment",
      "HorizontalPodAutoscaler",
      "Job",
      "Service",
      "ConfigMap",
    ] as const) {
      const list = await this.client.list<KubeObject>(kind, namespace, labels);
      await Promise.all(
        list.items.map((o) => this.client.delete(kind, namespace, o.metadata.name)),
      );
    }
    await this.waitForPods(namespace, r);
  }

  /** Teardown goes dependents first: the next one waits until these pods are gone. */
  private async waitForPods(namespace: string, r: Recorded): Promise<void> {
    const deadline = Date.now() + DELETE_WAIT_MS;
    const labels = selector(environmentLabels(r.scope, r.name));
    let delay = POLL_FIRST_MS;
    while (Date.now() < deadline) {
      const pods = await this.client.list<Pod>("Pod", namespace, labels);
      if (!pods.items.length) return;
      await sleep(delay);
      delay = Math.min(POLL_MAX_MS, Math.round(delay * 1.5));
    }
    throw new CaravanError(
      "INTERNAL",
      `${r.name}: its pods in namespace ${namespace} were still terminating after ${DELETE_WAIT_MS / 1000} s`,
    );
  }
}

/**
 * The record an object carries in its labels and annotations (undefined: not an
 * environment's). Items of a list have no `kind`: the kind label says which it is.
 */
function recordOf(o: KubeObject): Recorded | undefined {
  const labels = o.metadata.labels ?? {};
  const kind = labels[LABELS.kind];
  const annotations = o.metadata.annotations ?? {};
  const name = labels[LABELS.environment];
  const revision = annotations[ANNOTATIONS.revision];
  if (!name || !revision || (kind !== "app" && kind !== "task")) return undefined;
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
  };
}

/** Same revision, meant to run, and (an app) fully rolled out: nothing to write. */
function isUnchanged(r: Recorded, req: DeployRequest): boolean {
  if (r.revision !== req.revision || r.desired !== "running" || r.kind !== req.kind) return false;
  if (r.kind === "task") return true;
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

function stateOf(
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

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
