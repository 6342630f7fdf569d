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
import { CaravanError } from "../../errors.ts";
import type { ResolvedConfig } from "../../sdk/config.ts";
import type {
  Backend,
  Change,
  DeployRequest,
  DeployResult,
  Endpoints,
  EnvironmentSpec,
  EnvironmentStatus,
  LogsOptions,
  RunFilter,
  RunRecord,
  RunRequest,
  Scope,
  TokenAccess,
} from "../contract.ts";
import {
  GATEWAY_NAME,
  ROUTE_ANNOTATIONS,
  RUN_TOKEN_KEY,
  ingressHost,
  routeAnnotations,
  runApiUrl,
} from "./cluster-gateway.ts";
import { ClusterTokens } from "./cluster-tokens.ts";
import { Exposure } from "./exposure.ts";
import { jobRunOf, rerunJobEnvironment, runJobEnvironment } from "./jobs.ts";
import type { Job } from "./runs.ts";
import { ApiError, KubeClient, resourcePath, type ResourceKind } from "./client.ts";
import { teardownOrder } from "../teardown.ts";
import { NamespaceWatch, type Deployment, type Pod } from "./watch.ts";
import { ClusterRuns } from "./runs.ts";
import {
  isUnchanged,
  jobStateOf,
  newest,
  recordOf,
  stateOf,
  taskStateOf,
  type Recorded,
} from "./records.ts";
import { registerTasks, registrationJob } from "./registration.ts";
import { ContentStore, contentFor } from "./content.ts";
import {
  ANNOTATIONS,
  LABELS,
  MANAGED_BY,
  appObjects,
  jobObjects,
  autoscaled,
  initialReplicas,
  environmentLabels,
  namespaceFor,
  namespaceObject,
  scopeLabels,
  selector,
  taskMarkerName,
  taskObjects,
  type KubeObject,
} from "./manifests.ts";
import {
  adviceFor,
  podReady,
  restartsOf,
  rolloutState,
  type EndpointSliceLike,
} from "./rollout.ts";

/** First poll of a rollout after this long, then backing off to POLL_MAX_MS. */
const POLL_FIRST_MS = 100;
const POLL_MAX_MS = 1_000;
/** Extra time over an app's start timeout before caravan gives up on a rollout itself. */
const DEADLINE_SLACK_MS = 15_000;
/** How long delete waits for an environment's pods to be gone before it goes on. */
const DELETE_WAIT_MS = 60_000;

export class KubernetesBackend implements Backend {
  readonly name = "kubernetes";
  /** Namespaces applied by this backend object (each once per process). */
  private readonly namespaces = new Map<string, Promise<void>>();
  private readonly content: ContentStore;
  private readonly runs: ClusterRuns;
  /** One rollout poll loop per namespace. */
  private readonly watches = new Map<string, NamespaceWatch>();
  /** What each namespace held when first asked, for unchanged checks: one list, not a GET per app. */
  private readonly recorded = new Map<string, Promise<Map<string, Recorded>>>();
  private readonly exposure: Exposure;
  /** API tokens of the configured project/domain's gateway. */
  readonly tokens: TokenAccess;

  constructor(
    readonly client: KubeClient,
    private readonly config: Pick<ResolvedConfig, "kubernetes" | "project" | "domain">,
  ) {
    this.content = new ContentStore(client, (o, env) => this.apply(o, env));
    this.runs = new ClusterRuns(client, (scope) => this.namespaceOf(scope));
    this.exposure = new Exposure(
      client,
      config.kubernetes ?? {},
      (o, env) => this.apply(o, env),
      (req, namespace, objects) => this.content.upload(req, namespace, objects),
    );
    const scope = { project: config.project, domain: config.domain };
    this.tokens = new ClusterTokens(client, this.namespaceOf(scope), scope);
  }

  namespaceOf(scope: Scope): string {
    try {
      return namespaceFor(scope, this.config.kubernetes?.namespace);
    } catch (e) {
      throw new CaravanError("CONFIG", (e as Error).message);
    }
  }

  /**
   * What `validate` refuses up front: a declared minimum of 0 (a cluster has no scale-to-zero
   * layer), an ingress subdomain with no domain to complete it.
   */
  validate(_scope: Scope, specs: EnvironmentSpec[]): void {
    for (const spec of specs) {
      if (spec.kind === "app") this.exposure.check(spec);
      if (spec.kind !== "app" || !spec.scaling.replicasDeclared) continue;
      const [min, max] = spec.scaling.replicas;
      if (min === 0) {
        throw new CaravanError(
          "UNSUPPORTED",
          `app "${spec.name}": scaling.replicas [${min}, ${max}] asks to scale to zero, which a Kubernetes cluster cannot do without a scale-to-zero layer; give a minimum of 1 or more (replicas: [1, ${Math.max(1, max)}]), or deploy it with --backend local`,
          { app: spec.name },
        );
      }
    }
  }

  /**
   * Endpoints are known before anything is applied: the Service's address, and the app's port on
   * the namespace's gateway (picked now, kept by the deploy).
   */
  async reserve(scope: Scope, names: string[]): Promise<Record<string, Endpoints>> {
    const namespace = this.namespaceOf(scope);
    const out: Record<string, Endpoints> = {};
    for (const name of names)
      out[name] = this.exposure.endpoints(
        namespace,
        name,
        await this.exposure.portOf(namespace, name),
      );
    return out;
  }

  async deploy(req: DeployRequest): Promise<DeployResult> {
    const namespace = this.namespaceOf(req.scope);
    const before = (await this.recordedIn(req.scope)).get(req.name);
    const publicPort =
      req.spec.kind === "app" ? await this.exposure.portOf(namespace, req.name) : 0;
    const endpoints =
      req.spec.kind === "app"
        ? this.exposure.endpoints(
            namespace,
            req.name,
            publicPort,
            ingressHost(req.spec, this.config.kubernetes?.ingress?.domain),
          )
        : {};
    if (before && !req.force && isUnchanged(before, req)) {
      return { status: "unchanged", revision: req.revision, ...endpoints };
    }
    await this.ensureNamespace(namespace, req.scope);
    // The gateway serves public endpoints and the run API apps call tasks through.
    await this.exposure.ensureGateway(namespace, req);
    const { ctx, content } = contentFor(req, namespace, this.config.kubernetes?.registry);
    if (this.config.kubernetes?.otlpEndpoint)
      ctx.otlpEndpoint = this.config.kubernetes.otlpEndpoint;
    ctx.api = { url: runApiUrl(namespace), token: { name: GATEWAY_NAME, key: RUN_TOKEN_KEY } };
    await this.content.upload(req, namespace, content);
    if (req.spec.kind === "task") {
      // Ready once its code loaded in the cluster and registered its tasks (registration.ts).
      try {
        await registerTasks(this.client, { ...req, spec: req.spec }, ctx, (o) =>
          this.apply(o, req.name),
        );
      } finally {
        (await this.recordedIn(req.scope)).delete(req.name);
      }
      return { status: "ready", revision: req.revision };
    }
    if (req.spec.kind === "job") {
      // Ready once its Job completed (jobs.ts); its dependents are applied after that.
      try {
        await runJobEnvironment(this.client, { ...req, spec: req.spec }, ctx, (o) =>
          this.apply(o, req.name),
        );
      } finally {
        (await this.recordedIn(req.scope)).delete(req.name);
      }
      return { status: "ready", revision: req.revision };
    }
    ctx.route = routeAnnotations(req.spec, publicPort);
    const app = { ...req, spec: req.spec };
    // Independent objects: one round trip for all (a pod waits for its inputs ConfigMap anyway).
    await Promise.all([
      ...appObjects(app, ctx).map((o) => this.apply(o, req.name)),
      this.exposure.publish(app, namespace, publicPort, environmentLabels(req.scope, req.name)),
    ]);
    if (!before && autoscaled(req.spec)) {
      // A new autoscaled app starts at its minimum. Written by a manager of its own, so
      // caravan's applies never own (and never reset) the count the autoscaler moves.
      await this.client.apply(
        {
          apiVersion: "apps/v1",
          kind: "Deployment",
          metadata: { name: req.name, namespace },
          spec: { replicas: initialReplicas(req.spec) },
        },
        { fieldManager: "caravan-initial-replicas" },
      );
    }
    await this.awaitRollout(req, namespace);
    // What was listed for unchanged checks no longer holds for this one.
    (await this.recordedIn(req.scope)).delete(req.name);
    return { status: "ready", revision: req.revision, ...endpoints };
  }

  async status(scope?: Scope): Promise<EnvironmentStatus[]> {
    const namespace = scope ? this.namespaceOf(scope) : undefined;
    const managed = scope ? selector(scopeLabels(scope)) : `${MANAGED_BY}=caravan`;
    const [deployments, markers, pods, slices, services, ingresses, jobs] = await Promise.all([
      this.client.list<Deployment>("Deployment", namespace, managed),
      this.client.list<KubeObject>("ConfigMap", namespace, `${managed},${LABELS.kind}=task`),
      this.client.list<Pod>("Pod", namespace, managed),
      this.client.list<EndpointSliceLike & { metadata: KubeObject["metadata"] }>(
        "EndpointSlice",
        namespace,
        managed,
      ),
      this.client.list<KubeObject>("Service", namespace, managed),
      this.client.list<KubeObject & { spec?: { rules?: { host?: string }[] } }>(
        "Ingress",
        namespace,
        managed,
      ),
      this.client.list<Job>("Job", namespace, `${managed},${LABELS.kind}=job`),
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
        desiredReplicas: d.spec?.replicas ?? 1,
        ...this.exposure.endpoints(
          r.namespace,
          r.name,
          Number(
            services.items.find((x) => key(x) && x.metadata.name === r.name)?.metadata
              .annotations?.[ROUTE_ANNOTATIONS.port],
          ),
          ingresses.items.find((x) => key(x))?.spec?.rules?.[0]?.host,
        ),
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
        ...taskStateOf(r),
        revision: r.revision,
        restarts: 0,
        pids: [],
        instances: [],
        dependsOn: r.dependsOn,
        updatedAt: r.deployedAt,
      });
    }
    // Jobs: one environment per job, recorded by its newest Job; the others are its history.
    const byJob = new Map<string, { record: Recorded; jobs: Job[] }>();
    for (const j of jobs.items) {
      const r = recordOf(j);
      if (!r) continue;
      const key = `${r.namespace}/${r.name}`;
      const seen = byJob.get(key);
      byJob.set(key, {
        record: newest(seen?.record, r),
        jobs: [...(seen?.jobs ?? []), j],
      });
    }
    for (const { record: r, jobs: own } of byJob.values()) {
      const runs = own
        .sort((a, b) =>
          String(b.metadata.creationTimestamp ?? "").localeCompare(
            String(a.metadata.creationTimestamp ?? ""),
          ),
        )
        .map(jobRunOf);
      const active = pods.items.filter(
        (p) =>
          p.metadata.namespace === r.namespace &&
          p.metadata.labels?.[LABELS.environment] === r.name &&
          (p.status as { phase?: string } | undefined)?.phase === "Running",
      );
      out.push({
        project: r.scope.project,
        domain: r.scope.domain,
        name: r.name,
        kind: "job",
        ...jobStateOf(r),
        revision: r.revision,
        restarts: 0,
        pids: [],
        instances: active.map((p) => ({ id: p.metadata.name, ready: true })),
        dependsOn: r.dependsOn,
        updatedAt: r.deployedAt,
        jobRuns: runs,
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
      const known = (await this.recordedIn(scope, true)).has(name);
      throw new CaravanError(
        known ? "NOT_FOUND" : "NOT_DEPLOYED",
        known
          ? `${name} has no pods in namespace ${namespace} (stopped? caravan status)`
          : `"${name}" is not deployed in ${scope.project}/${scope.domain} (namespace ${namespace}; see caravan status)`,
      );
    }
    const many = pods.items.length > 1;
    if (opts.follow && many) {
      throw new CaravanError(
        "USAGE",
        `${name} has ${pods.items.length} pods (${pods.items.map((p) => p.metadata.name).join(", ")}); --follow reads one: use kubectl logs -f -l caravan.dev/environment=${name} -n ${namespace} --prefix, or caravan logs without --follow`,
      );
    }
    for (const pod of pods.items) {
      let res;
      try {
        res = await this.client.stream(
          `/api/v1/namespaces/${namespace}/pods/${pod.metadata.name}/log`,
          {
            container: "app",
            ...(opts.tail !== undefined ? { tailLines: opts.tail } : {}),
            ...(opts.follow ? { follow: true } : {}),
          },
          // A followed log may stay silent for as long as it likes.
          {
            ...(opts.signal ? { signal: opts.signal } : {}),
            ...(opts.follow ? { timeoutMs: 0 } : {}),
          },
        );
      } catch (e) {
        if (opts.signal?.aborted) return;
        const why = e instanceof ApiError ? e.message : (e as Error).message;
        throw new CaravanError(
          "NOT_FOUND",
          `the logs of ${name} (pod ${pod.metadata.name}) cannot be read: ${why}`,
        );
      }
      try {
        for await (const line of createInterface({ input: res, crlfDelay: Infinity })) {
          yield many ? `[${pod.metadata.name}] ${line}` : line;
        }
      } catch (e) {
        if (opts.signal?.aborted) return; // Ctrl-C while following
        throw e;
      }
    }
  }

  /** `caravan job rerun`: the job's newest Job run again under a new name (jobs.ts). */
  async rerunJob(scope: Scope, name: string): Promise<DeployResult> {
    const revision = await rerunJobEnvironment(this.client, this.namespaceOf(scope), scope, name);
    return { status: "ready", revision };
  }

  /** A run is one Job (see runs.ts). */
  startRun(req: RunRequest, opts: { waitMs?: number } = {}): Promise<RunRecord> {
    return this.runs.start(req, opts.waitMs);
  }

  getRun(id: string, opts: { waitMs?: number } = {}): Promise<RunRecord> {
    return this.runs.get(id, opts.waitMs);
  }

  listRuns(scope: Scope | undefined, filter?: RunFilter): Promise<RunRecord[]> {
    return this.runs.list(scope, filter);
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
      // Read first: a user whose rights stop at an existing namespace can still deploy there.
      done = this.client
        .get("Namespace", undefined, namespace)
        .catch((e) => (e instanceof ApiError && e.status === 403 ? true : Promise.reject(e)))
        .then((found) =>
          found ? undefined : this.apply(namespaceObject(namespace, scope), namespace),
        );
      this.namespaces.set(namespace, done);
      done.catch(() => this.namespaces.delete(namespace));
    }
    return done;
  }

  /** The objects a deploy of `req` writes, content first, as `deploy` applies them. */
  private objectsOf(req: DeployRequest, namespace: string): KubeObject[] {
    const { ctx, content } = contentFor(req, namespace, this.config.kubernetes?.registry);
    if (this.config.kubernetes?.otlpEndpoint)
      ctx.otlpEndpoint = this.config.kubernetes.otlpEndpoint;
    const own =
      req.spec.kind === "task"
        ? [...taskObjects(req, ctx), registrationJob({ ...req, spec: req.spec }, ctx)]
        : req.spec.kind === "job"
          ? jobObjects({ ...req, spec: req.spec }, ctx)
          : appObjects({ ...req, spec: req.spec }, ctx);
    return [...content, ...own];
  }

  async preview(req: DeployRequest): Promise<Change> {
    const namespace = this.namespaceOf(req.scope);
    const before = (await this.recordedIn(req.scope)).get(req.name);
    const from = before ? { from: before.revision } : {};
    if (before && !req.force && isUnchanged(before, req))
      return { action: "unchanged", ...from, to: req.revision, writes: [] };
    const action = !before ? "create" : before.revision === req.revision ? "start" : "update";
    const objects = this.objectsOf(req, namespace);
    const writes = objects.map((o) => `${o.kind} ${namespace}/${o.metadata.name}`);
    try {
      const hasNamespace = await this.client.get("Namespace", undefined, namespace);
      if (!hasNamespace) writes.unshift(`Namespace ${namespace}`);
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
    // Replicas start one at a time (maxSurge 1, maxUnavailable 0): each gets the start timeout.
    // The Deployment's own progress deadline catches a stall sooner.
    const replicas = req.spec.kind === "app" ? Math.max(1, req.spec.scaling.replicas[0]) : 1;
    const deadline = Date.now() + startSeconds * 1000 * replicas + DEADLINE_SLACK_MS;
    const rollout = this.watchOf(namespace, req.scope).until(async (seen) => {
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
        // The pod's last lines are read after leaving the poll loop, which every rollout in
        // the namespace shares (a slow log read must not hold the others).
        const advice = adviceFor(last.reason);
        throw new CaravanError(
          last.reason === "ProgressDeadlineExceeded" ? "START_TIMEOUT" : "APP_NOT_READY",
          `${last.reason}: ${last.message}${advice ? ` (${advice})` : ""}`,
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
    try {
      await rollout;
    } catch (e) {
      if (e instanceof CaravanError && typeof e.details.pod === "string")
        e.message += await this.lastLogLines(namespace, e.details.pod);
      throw e;
    }
  }

  private watchOf(namespace: string, scope: Scope): NamespaceWatch {
    const only = selector(scopeLabels(scope));
    let watch = this.watches.get(`${namespace}|${only}`);
    if (!watch) {
      watch = new NamespaceWatch(this.client, namespace, only);
      this.watches.set(`${namespace}|${only}`, watch);
    }
    return watch;
  }

  /** The last lines a failed pod wrote, for the error (empty when the cluster has none). */
  private async lastLogLines(namespace: string, pod: string): Promise<string> {
    for (const previous of [true, false]) {
      try {
        const res = await this.client.stream(
          `/api/v1/namespaces/${namespace}/pods/${pod}/log`,
          { container: "app", tailLines: 20, ...(previous ? { previous: true } : {}) },
          // Every rollout in the namespace waits for this tick: never long.
          { timeoutMs: 5_000 },
        );
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
  private recordedIn(scope: Scope, fresh = false): Promise<Map<string, Recorded>> {
    const namespace = this.namespaceOf(scope);
    // By scope, not namespace: a configured namespace may hold several project/domains.
    const key = `${namespace}|${scope.project}/${scope.domain}`;
    let listing = fresh ? undefined : this.recorded.get(key);
    if (!listing) {
      listing = (async () => {
        const managed = selector(scopeLabels(scope));
        const [deployments, markers, jobs] = await Promise.all([
          this.client.list<Deployment>("Deployment", namespace, managed),
          this.client.list<KubeObject>("ConfigMap", namespace, `${managed},${LABELS.kind}=task`),
          this.client.list<KubeObject>("Job", namespace, `${managed},${LABELS.kind}=job`),
        ]);
        const out = new Map<string, Recorded>();
        for (const o of [...deployments.items, ...markers.items, ...jobs.items]) {
          const r = recordOf(o);
          // A job has a Job per run: its newest one is its record.
          if (r) out.set(r.name, newest(out.get(r.name), r));
        }
        return out;
      })();
      this.recorded.set(key, listing);
      listing.catch(() => this.recorded.delete(key));
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
    const recorded = await this.recordedIn(scope, true);
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
    if (forget) {
      await this.exposure.release(
        namespace,
        order.filter((n) => recorded.get(n)?.kind === "app"),
      );
      await this.content.collect(namespace, scope);
    }
    this.recorded.delete(`${namespace}|${scope.project}/${scope.domain}`);
    return order;
  }

  /** Scales an app to zero and records that it is stopped (its definition stays). */
  private async stopEnvironment(namespace: string, r: Recorded): Promise<void> {
    const kind: ResourceKind =
      r.kind === "app" ? "Deployment" : r.kind === "job" ? "Job" : "ConfigMap";
    const name =
      r.kind === "app" ? r.name : r.kind === "job" ? r.job!.metadata.name : taskMarkerName(r.name);
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
      "Ingress",
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

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
