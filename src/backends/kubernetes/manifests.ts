/**
 * From a deploy request to Kubernetes objects. Pure: no I/O, the same request gives the same
 * objects, so an unchanged environment is recognised by its revision annotation alone.
 *
 * An app is a Deployment (rolling update that never drops below the desired count, readiness
 * and startup probes, a short pre-stop delay) and a ClusterIP Service on port 80. Its code is
 * not baked into an image: the esbuild bundle and caravan's compiled runtime go into
 * immutable, content-addressed ConfigMaps mounted into the app's image. A task environment is
 * its code ConfigMap and a marker ConfigMap that records its revision and tasks.
 */
import type { AppSpec, DeployRequest, EnvironmentSpec, JobSpec, Scope } from "../contract.ts";
import { commandArgv, inputsDocument, launchEnvironment, type LaunchSource } from "../launch.ts";
import {
  API_TOKEN_ENV,
  HEALTH_PATH,
  HEALTH_PORT,
  HEALTH_PORT_ENV,
  RUNTIME_ENV,
  type RuntimeConfig,
} from "../../runtime/protocol.ts";
import { imageReference } from "../../sdk/image.ts";

export const MANAGED_BY = "app.kubernetes.io/managed-by";
export const LABELS = {
  project: "caravan.dev/project",
  domain: "caravan.dev/domain",
  environment: "caravan.dev/environment",
  kind: "caravan.dev/kind",
  /** On a pod: the revision it runs (rollouts tell old pods from new by it). */
  revision: "caravan.dev/revision",
  /** On a content-addressed object: what it holds ("code", "files", "runtime"). */
  content: "caravan.dev/content",
  /** On a task environment's registration Job and its pod: the revision it registers. */
  registration: "caravan.dev/registration",
} as const;
export const ANNOTATIONS = {
  revision: "caravan.dev/revision",
  /** The environment's direct dependencies, JSON: teardown goes dependents first from it. */
  dependsOn: "caravan.dev/depends-on",
  /** "running" or "stopped" (`caravan stop` scales to zero and keeps the definition). */
  desired: "caravan.dev/desired",
  deployedAt: "caravan.dev/deployed-at",
  /** On a pod template, set by `deploy --force`: new pods even for the same revision. */
  restartedAt: "caravan.dev/restarted-at",
  /** A task environment's task ids, JSON. */
  tasks: "caravan.dev/tasks",
  /** On a task environment's marker: its revision's registration, "pending", "ready" or "failed". */
  registration: "caravan.dev/registration",
  /** On a task environment's marker: why its registration failed. */
  error: "caravan.dev/error",
} as const;

/** Where things are mounted in a pod: the image's `/app` holds its node_modules. */
export const POD_PATHS = {
  code: "/app/.caravan/code",
  runtime: "/app/.caravan/runtime",
  files: "/app/.caravan/files",
  inputsFile: "/app/.caravan/inputs/inputs.json",
  workDir: "/app",
} as const;

/** A Service's port: endpoints are `http://<app>.<namespace>.svc.cluster.local`. */
export const SERVICE_PORT = 80;
/** Seconds a pod keeps serving after it is taken out of the Service (endpoints settle first). */
export const PRE_STOP_SECONDS = 3;

export type KubeObject = {
  apiVersion: string;
  kind: string;
  metadata: {
    name: string;
    namespace?: string;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    [k: string]: unknown;
  };
  [k: string]: unknown;
};

/** A file that goes into a ConfigMap: its path under the mount and its bytes. */
export interface BundleFile {
  path: string;
  contents: Uint8Array;
}

/** The namespace of a project/domain: `<project>-<domain>` unless configured. */
export function namespaceFor(scope: Scope, configured?: string): string {
  const name = configured ?? `${scope.project}-${scope.domain}`;
  if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(name) || name.length > 63) {
    throw new Error(
      `namespace "${name}" is not a DNS-1123 label of at most 63 characters; set kubernetes.namespace in caravan.config.*`,
    );
  }
  return name;
}

/** The stable, deterministic in-cluster endpoint of an app. */
export function endpointOf(app: string, namespace: string): string {
  return `http://${app}.${namespace}.svc.cluster.local`;
}

export function scopeLabels(scope: Scope): Record<string, string> {
  return {
    [MANAGED_BY]: "caravan",
    [LABELS.project]: scope.project,
    [LABELS.domain]: scope.domain,
  };
}

/** Labels every object of an environment carries; delete finds them all by these. */
export function environmentLabels(scope: Scope, name: string): Record<string, string> {
  return { ...scopeLabels(scope), [LABELS.environment]: name };
}

/** `caravan.dev/environment=<name>,...` for a list call. */
export function selector(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

export function namespaceObject(namespace: string, scope: Scope): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: namespace, labels: scopeLabels(scope) },
  };
}

/**
 * An immutable ConfigMap holding `files`, named after their content hash. ConfigMap keys
 * cannot contain "/", so each file gets a flat key and the volume maps it back to its path.
 */
export function contentConfigMap(
  name: string,
  namespace: string,
  labels: Record<string, string>,
  content: "code" | "files" | "runtime",
  files: BundleFile[],
): { object: KubeObject; items: { key: string; path: string }[] } {
  const binaryData: Record<string, string> = {};
  const items = files
    .map((f, i) => ({ key: `f${i}-${flatKey(f.path)}`.slice(0, 253), path: f.path, f }))
    .map(({ key, path, f }) => {
      binaryData[key] = Buffer.from(f.contents).toString("base64");
      return { key, path };
    });
  return {
    object: {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name, namespace, labels: { ...labels, [LABELS.content]: content } },
      immutable: true,
      binaryData,
    },
    items,
  };
}

function flatKey(path: string): string {
  return path.replace(/[^-._a-zA-Z0-9]/g, "_");
}

/** What the backend has ready for a request: the namespace and the content it uploaded. */
export interface ManifestContext {
  namespace: string;
  /** The code ConfigMap and how its files map to paths. */
  code: { name: string; items: { key: string; path: string }[] };
  /** caravan's compiled runtime (JS apps run in it). */
  runtime: { name: string; items: { key: string; path: string }[] };
  /** The file snapshot (include, File/Dir inputs), when the app has one. */
  files?: { name: string; items: { key: string; path: string }[]; localDir: string };
  /** Input values as the pod sees them (File/Dir inputs point into the mounted files). */
  inputs: Record<string, string>;
  /** The bundle's entry module, relative to the code mount. */
  entry: string;
  /** The Secret holding the project/domain's secrets. */
  secretName: string;
  /** Registry prefix of built images (`kubernetes.registry`). */
  registry?: string;
  now: string;
  /** How the namespace's gateway serves an app: annotations on its Service (cluster-gateway.ts). */
  route?: Record<string, string>;
  /** The run API apps call tasks through, and the Secret entry holding its token. */
  api?: { url: string; token: { name: string; key: string } };
  /** The OpenTelemetry collector pods report to (`kubernetes.otlpEndpoint`), if any. */
  otlpEndpoint?: string;
}

/** Everything to apply for an app, in apply order (the Deployment last but one, then the Service). */
export function appObjects(
  req: DeployRequest & { spec: AppSpec },
  ctx: ManifestContext,
): KubeObject[] {
  const spec = req.spec;
  const labels = environmentLabels(req.scope, req.name);
  const port = spec.port.port;
  const isCommand = spec.serveKind === "command";
  const { src, env, containerEnv, volumes, mounts } = processParts(
    req,
    ctx,
    isCommand ? undefined : port,
  );
  if (!isCommand) containerEnv.push({ name: HEALTH_PORT_ENV, value: String(HEALTH_PORT) });

  const probe = readinessProbe(spec);
  const startSeconds = spec.timeouts.start;
  const container: Record<string, unknown> = {
    name: "app",
    image: imageOf(spec, ctx.registry),
    ports: [{ name: "http", containerPort: port, protocol: "TCP" }],
    env: containerEnv,
    volumeMounts: mounts,
    readinessProbe: { ...probe, periodSeconds: 2, failureThreshold: 2 },
    // The app's liveness check: the kubelet restarts the container after `failures` in a row.
    ...(spec.liveness
      ? {
          livenessProbe: {
            ...(spec.liveness.tcp
              ? { tcpSocket: { port: "http" } }
              : { httpGet: { path: spec.liveness.path ?? "/", port: "http" } }),
            periodSeconds: Math.max(1, Math.round(spec.liveness.intervalS)),
            failureThreshold: spec.liveness.failures,
          },
        }
      : {}),
    // Gives a slow start `timeouts.start` before liveness or readiness count against it.
    startupProbe: {
      ...probe,
      periodSeconds: 1,
      failureThreshold: Math.max(1, startSeconds),
    },
    lifecycle: { preStop: { sleep: { seconds: PRE_STOP_SECONDS } } },
    ...resourcesOf(spec),
  };
  if (isCommand) {
    container.command = commandArgv(src, env, port);
    container.workingDir = ctx.files && spec.include.length ? POD_PATHS.files : POD_PATHS.workDir;
  } else {
    container.command = ["node", `${POD_PATHS.runtime}/runtime/main.js`];
    container.workingDir = POD_PATHS.workDir;
  }
  const [min, max] = spec.scaling.replicas;
  const k8s = spec.kubernetes ?? {};
  const annotations = {
    [ANNOTATIONS.revision]: req.revision,
    [ANNOTATIONS.dependsOn]: JSON.stringify(spec.dependsOn),
    [ANNOTATIONS.desired]: "running",
    [ANNOTATIONS.deployedAt]: ctx.now,
  };
  const deployment: KubeObject = {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: {
      name: req.name,
      namespace: ctx.namespace,
      labels: { ...labels, [LABELS.kind]: "app" },
      annotations,
    },
    spec: {
      // Autoscaled: the HorizontalPodAutoscaler owns the count (caravan never writes it).
      ...(autoscaled(spec) ? {} : { replicas: fixedReplicas(spec) }),
      selector: { matchLabels: labels },
      // kubectl's rollout rule with a deadline: a start that makes no progress fails.
      progressDeadlineSeconds: Math.max(startSeconds, 10),
      revisionHistoryLimit: 3,
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: {
          // caravan's own labels win: the selector and rollouts rely on them.
          labels: { ...k8s.podLabels, ...labels, [LABELS.revision]: req.revision },
          annotations: {
            ...k8s.podAnnotations,
            [ANNOTATIONS.revision]: req.revision,
            // --force: a changed template is what makes Kubernetes replace the pods.
            ...(req.force ? { [ANNOTATIONS.restartedAt]: ctx.now } : {}),
          },
        },
        spec: {
          ...podSettings(k8s),
          containers: [container],
          volumes,
          terminationGracePeriodSeconds: PRE_STOP_SECONDS + 10,
          enableServiceLinks: false,
        },
      },
    },
  };
  // The Service and the autoscaler are named and labelled like the Deployment.
  const companion = {
    name: req.name,
    namespace: ctx.namespace,
    labels: { ...labels, [LABELS.kind]: "app" },
    annotations: { [ANNOTATIONS.revision]: req.revision },
  };
  const service: KubeObject = {
    apiVersion: "v1",
    kind: "Service",
    metadata: { ...companion, annotations: { ...companion.annotations, ...ctx.route } },
    spec: {
      type: "ClusterIP",
      selector: labels,
      ports: [{ name: "http", port: SERVICE_PORT, targetPort: "http", protocol: "TCP" }],
    },
  };
  const objects = [inputsObject(req, ctx, src), deployment, service];
  if (autoscaled(spec)) {
    objects.push({
      apiVersion: "autoscaling/v2",
      kind: "HorizontalPodAutoscaler",
      metadata: companion,
      spec: {
        scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name: req.name },
        minReplicas: min,
        maxReplicas: max,
        metrics: [
          {
            type: "Resource",
            resource: { name: "cpu", target: { type: "Utilization", averageUtilization: 80 } },
          },
        ],
      },
    });
  }
  return objects;
}

/**
 * What a process of an app or job is given in its pod: its variables (caravan's runtime
 * config when it runs in the runtime, the run token and secrets by reference) and the
 * volumes it mounts (code, inputs, the runtime, its files). `runtimePort`: it runs in
 * caravan's runtime (an app on that port; a function job on 0); undefined: a command.
 */
function processParts(req: DeployRequest, ctx: ManifestContext, runtimePort: number | undefined) {
  const spec = req.spec;
  const src: LaunchSource = { ...req, inputs: ctx.inputs };
  const env = launchEnvironment(src, {
    inputsFile: POD_PATHS.inputsFile,
    apiUrl: ctx.api?.url ?? "",
    ...(ctx.otlpEndpoint ? { otlp: { endpoint: ctx.otlpEndpoint } } : {}),
  });
  const containerEnv: Record<string, unknown>[] = Object.entries(env)
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, value]) => ({ name, value }));
  const inRuntime = runtimePort !== undefined;
  if (inRuntime) {
    const runtimeConfig: RuntimeConfig = {
      kind: spec.kind === "job" ? "job" : "app",
      name: req.name,
      project: req.scope.project,
      domain: req.scope.domain,
      entry: `${POD_PATHS.code}/${ctx.entry}`,
      sourceRoot: POD_PATHS.workDir,
      port: runtimePort,
      host: "0.0.0.0",
      endpoints: mapValues(req.dependencies, (e) => e.internalEndpoint),
      publicEndpoints: mapValues(req.dependencies, (e) => e.endpoint),
      inputs: ctx.inputs,
    };
    containerEnv.push({ name: RUNTIME_ENV, value: JSON.stringify(runtimeConfig) });
  }
  if (ctx.api)
    containerEnv.push({ name: API_TOKEN_ENV, valueFrom: { secretKeyRef: ctx.api.token } });
  // Secret values never appear in the pod spec: the kubelet reads them from the Secret.
  for (const s of spec.secrets)
    containerEnv.push({
      name: s.envVar,
      valueFrom: { secretKeyRef: { name: ctx.secretName, key: s.key } },
    });

  const volumes: Record<string, unknown>[] = [
    { name: "code", configMap: { name: ctx.code.name, items: ctx.code.items } },
    {
      name: "inputs",
      configMap: { name: inputsName(req), items: [{ key: "inputs.json", path: "inputs.json" }] },
    },
  ];
  const mounts: Record<string, unknown>[] = [
    { name: "code", mountPath: POD_PATHS.code, readOnly: true },
    { name: "inputs", mountPath: dirOf(POD_PATHS.inputsFile), readOnly: true },
  ];
  if (inRuntime) {
    volumes.push({
      name: "runtime",
      configMap: { name: ctx.runtime.name, items: ctx.runtime.items },
    });
    mounts.push({ name: "runtime", mountPath: POD_PATHS.runtime, readOnly: true });
  }
  if (ctx.files) {
    volumes.push({ name: "files", configMap: { name: ctx.files.name, items: ctx.files.items } });
    mounts.push({ name: "files", mountPath: POD_PATHS.files, readOnly: true });
  }
  return { src, env, containerEnv, volumes, mounts };
}

/** The Job of one run of a job (JobEnvironment): its name from the revision (and a --force). */
export function jobName(name: string, revision: string, again?: string): string {
  const suffix = `-${revision}${again ? `-${again}` : ""}`;
  return `${name.slice(0, 63 - suffix.length).replace(/-+$/, "")}${suffix}`;
}

/**
 * A job: its inputs ConfigMap and one Job that must complete before its dependents are applied.
 * The Job carries the environment's record (revision, dependencies); `retries` become
 * `backoffLimit`, `timeouts.run` the deadline of every attempt together.
 */
export function jobObjects(
  req: DeployRequest & { spec: JobSpec },
  ctx: ManifestContext,
  again?: string,
): KubeObject[] {
  const spec = req.spec;
  const labels = environmentLabels(req.scope, req.name);
  const isCommand = spec.runKind === "command";
  const { src, env, containerEnv, volumes, mounts } = processParts(
    req,
    ctx,
    isCommand ? undefined : 0,
  );
  const k8s = spec.kubernetes ?? {};
  const container: Record<string, unknown> = {
    name: "job",
    image: imageOf(spec, ctx.registry),
    // A command's last lines say why it failed, where it wrote no message of its own.
    terminationMessagePolicy: "FallbackToLogsOnError",
    env: containerEnv,
    volumeMounts: mounts,
    ...resourcesOf(spec),
    ...(isCommand
      ? {
          command: commandArgv(src, env, ""),
          workingDir: ctx.files && spec.include.length ? POD_PATHS.files : POD_PATHS.workDir,
        }
      : {
          command: ["node", `${POD_PATHS.runtime}/runtime/main.js`],
          workingDir: POD_PATHS.workDir,
        }),
  };
  const job: KubeObject = {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: {
      name: jobName(req.name, req.revision, again),
      namespace: ctx.namespace,
      labels: { ...labels, [LABELS.kind]: "job" },
      annotations: {
        [ANNOTATIONS.revision]: req.revision,
        [ANNOTATIONS.dependsOn]: JSON.stringify(spec.dependsOn),
        [ANNOTATIONS.desired]: "running",
        [ANNOTATIONS.deployedAt]: ctx.now,
      },
    },
    spec: {
      backoffLimit: spec.retries,
      activeDeadlineSeconds: spec.timeouts.run * (spec.retries + 1),
      template: {
        metadata: {
          labels: { ...k8s.podLabels, ...labels, [LABELS.revision]: req.revision },
          annotations: { ...k8s.podAnnotations, [ANNOTATIONS.revision]: req.revision },
        },
        spec: {
          restartPolicy: "Never",
          // timeouts.run is per attempt, as locally; the Job's own deadline covers them all.
          activeDeadlineSeconds: spec.timeouts.run,
          ...podSettings(k8s),
          enableServiceLinks: false,
          containers: [container],
          volumes,
        },
      },
    },
  };
  return [inputsObject(req, ctx, src), job];
}

/** A pod's settings from the environment's `kubernetes` options (labels and annotations aside). */
export function podSettings(k8s: NonNullable<EnvironmentSpec["kubernetes"]>) {
  return {
    ...(k8s.serviceAccountName ? { serviceAccountName: k8s.serviceAccountName } : {}),
    ...(k8s.nodeSelector ? { nodeSelector: k8s.nodeSelector } : {}),
    ...(k8s.tolerations ? { tolerations: k8s.tolerations } : {}),
  };
}

/** `min < max` (declared): a HorizontalPodAutoscaler keeps the count within them. */
export function autoscaled(spec: AppSpec): boolean {
  const [min, max] = spec.scaling.replicas;
  return min < max && spec.scaling.replicasDeclared === true && min >= 1;
}

/**
 * The replica count of an app that is not autoscaled: `min == max`, or one when the app
 * declared none (the default [0, 1]: a cluster has no scale-to-zero, and nothing was asked).
 */
export function fixedReplicas(spec: AppSpec): number {
  const [min, max] = spec.scaling.replicas;
  return spec.scaling.replicasDeclared ? Math.max(1, min === max ? max : min) : 1;
}

/** The replica count an app starts with: its minimum. */
export function initialReplicas(spec: AppSpec): number {
  return autoscaled(spec) ? spec.scaling.replicas[0] : fixedReplicas(spec);
}

/**
 * A task environment: its marker (revision, tasks, dependencies, and whether this revision's
 * code registered its tasks in the cluster). Its code is uploaded beside it.
 */
export function taskObjects(
  req: DeployRequest,
  ctx: ManifestContext,
  registration: { state: "pending" | "ready" | "failed"; error?: string } = { state: "pending" },
): KubeObject[] {
  const tasks = req.spec.kind === "task" ? req.spec.tasks.map((t) => t.id) : [];
  return [
    {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: {
        name: taskMarkerName(req.name),
        namespace: ctx.namespace,
        labels: { ...environmentLabels(req.scope, req.name), [LABELS.kind]: "task" },
        annotations: {
          [ANNOTATIONS.revision]: req.revision,
          [ANNOTATIONS.dependsOn]: JSON.stringify(req.spec.dependsOn),
          [ANNOTATIONS.desired]: "running",
          [ANNOTATIONS.deployedAt]: ctx.now,
          [ANNOTATIONS.tasks]: JSON.stringify(tasks),
          [ANNOTATIONS.registration]: registration.state,
          ...(registration.error ? { [ANNOTATIONS.error]: registration.error } : {}),
        },
      },
      data: {
        revision: req.revision,
        // A built image's reference carries the configured registry.
        image: imageOf(req.spec, ctx.registry),
        code: ctx.code.name,
        runtime: ctx.runtime.name,
        // ConfigMap keys are flat: how they map back to the files' paths.
        codeItems: JSON.stringify(ctx.code.items),
        runtimeItems: JSON.stringify(ctx.runtime.items),
        entry: ctx.entry,
        // What a run's Job is made from: image, task options, pod settings (no secret values).
        spec: JSON.stringify(req.spec),
        // Its variables (env vars, dependency endpoints, caravan's), built like an app's.
        // With the run API's URL: a task may run other tasks (its token comes by reference).
        launch: JSON.stringify(
          launchEnvironment(req, {
            inputsFile: "",
            apiUrl: ctx.api?.url ?? "",
            ...(ctx.otlpEndpoint ? { otlp: { endpoint: ctx.otlpEndpoint } } : {}),
          }),
        ),
        tasks: JSON.stringify(tasks),
      },
    },
  ];
}

export function taskMarkerName(name: string): string {
  return `${name}-tasks`;
}

function inputsName(req: DeployRequest): string {
  return `${req.name}-inputs-${req.revision}`;
}

/** `$CARAVAN_INPUTS_FILE` of the revision, as an immutable ConfigMap (no secrets in it). */
function inputsObject(req: DeployRequest, ctx: ManifestContext, src: LaunchSource): KubeObject {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: {
      name: inputsName(req),
      namespace: ctx.namespace,
      labels: { ...environmentLabels(req.scope, req.name), [LABELS.content]: "inputs" },
    },
    immutable: true,
    data: { "inputs.json": JSON.stringify(inputsDocument(src), null, 2) + "\n" },
  };
}

function readinessProbe(spec: AppSpec): Record<string, unknown> {
  // A JS app: caravan's runtime says when it serves (after its start-up hooks ran).
  if (spec.serveKind !== "command") return { httpGet: { path: HEALTH_PATH, port: HEALTH_PORT } };
  if (spec.readiness.tcp) return { tcpSocket: { port: "http" } };
  if (spec.readiness.path) return { httpGet: { path: spec.readiness.path, port: "http" } };
  return { tcpSocket: { port: "http" } };
}

/** The image reference: the environment's, or the default Node image. */
export function imageOf(spec: EnvironmentSpec, registry?: string): string {
  return imageReference(spec.name, spec.image, registry);
}

function resourcesOf(spec: EnvironmentSpec): { resources?: Record<string, unknown> } {
  const r = spec.resources;
  if (!r) return {};
  const requests: Record<string, string> = {};
  const limits: Record<string, string> = {};
  if (r.milliCpu !== undefined) requests.cpu = `${r.milliCpu}m`;
  if (r.memoryBytes !== undefined) {
    requests.memory = String(r.memoryBytes);
    limits.memory = String(r.memoryBytes);
  }
  if (r.gpu) limits["nvidia.com/gpu"] = String(r.gpu);
  return { resources: { requests, ...(Object.keys(limits).length ? { limits } : {}) } };
}

function mapValues<T, U>(o: Record<string, T>, f: (v: T) => U): Record<string, U> {
  return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, f(v)]));
}

function dirOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/"));
}
