/**
 * A small client for the Kubernetes API: the requests are plain HTTPS so caravan chooses every
 * query parameter (server-side apply with `fieldManager=caravan`, `force`,
 * `fieldValidation=Strict`, dry runs) and counts its calls (an unchanged deploy must cost a
 * bounded number of them). Where the cluster is and how to authenticate come from outside:
 * the kubeconfig (kubeconfig.ts, for the CLI) or a pod's service account (`inCluster`, for
 * caravan's own gateway, which must not depend on any package).
 */
import { readFileSync } from "node:fs";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { Agent, request as httpsRequest, type RequestOptions } from "node:https";
import { join } from "node:path";
import { CaravanError } from "../../errors.ts";
import type { KubeObject } from "./manifests.ts";

/** Where the API server is and how to authenticate to it. */
export interface Credentials {
  server: string;
  /** A name for messages: the kubeconfig context, or "in-cluster". */
  context: string;
  /** Adds TLS settings and auth headers to a request's options. */
  authorize(options: RequestOptions): Promise<void>;
}

/** Where a pod finds its service account's token, CA and namespace. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount";

/** Where each kind lives in the API. */
const RESOURCES: Record<string, { group: string; plural: string; namespaced: boolean }> = {
  Namespace: { group: "/api/v1", plural: "namespaces", namespaced: false },
  ConfigMap: { group: "/api/v1", plural: "configmaps", namespaced: true },
  Secret: { group: "/api/v1", plural: "secrets", namespaced: true },
  Service: { group: "/api/v1", plural: "services", namespaced: true },
  Pod: { group: "/api/v1", plural: "pods", namespaced: true },
  Deployment: { group: "/apis/apps/v1", plural: "deployments", namespaced: true },
  ReplicaSet: { group: "/apis/apps/v1", plural: "replicasets", namespaced: true },
  EndpointSlice: {
    group: "/apis/discovery.k8s.io/v1",
    plural: "endpointslices",
    namespaced: true,
  },
  HorizontalPodAutoscaler: {
    group: "/apis/autoscaling/v2",
    plural: "horizontalpodautoscalers",
    namespaced: true,
  },
  Job: { group: "/apis/batch/v1", plural: "jobs", namespaced: true },
  Ingress: { group: "/apis/networking.k8s.io/v1", plural: "ingresses", namespaced: true },
  ServiceAccount: { group: "/api/v1", plural: "serviceaccounts", namespaced: true },
  Role: { group: "/apis/rbac.authorization.k8s.io/v1", plural: "roles", namespaced: true },
  RoleBinding: {
    group: "/apis/rbac.authorization.k8s.io/v1",
    plural: "rolebindings",
    namespaced: true,
  },
};
export type ResourceKind = keyof typeof RESOURCES;

/** The path of a collection (`name` omitted) or of one object. */
export function resourcePath(kind: ResourceKind, namespace?: string, name?: string): string {
  const r = RESOURCES[kind];
  if (!r) throw new Error(`unknown kind ${kind}`);
  const ns = r.namespaced && namespace ? `/namespaces/${namespace}` : "";
  return `${r.group}${ns}/${r.plural}${name ? `/${name}` : ""}`;
}

/** An error answer of the API server (CLUSTER_REJECTED, with its HTTP status and reason). */
export class ApiError extends CaravanError {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(
      "CLUSTER_REJECTED",
      `the Kubernetes API answered ${status}${reason ? ` ${reason}` : ""}: ${message}`,
      {
        status,
        reason,
      },
    );
  }
}

/** The parts of one API call besides its method and path. */
export interface CallOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface CallCounts {
  total: number;
  writes: number;
  byMethod: Record<string, number>;
}

export interface ListResult<T> {
  items: T[];
  metadata?: { resourceVersion?: string };
}

export class KubeClient {
  readonly calls: CallCounts = { total: 0, writes: 0, byMethod: {} };
  private agent?: Agent;

  readonly server: string;
  readonly context: string;

  constructor(private readonly credentials: Credentials) {
    this.server = credentials.server.replace(/\/$/, "");
    this.context = credentials.context;
  }

  /**
   * A pod's own identity: the API server from KUBERNETES_SERVICE_HOST/PORT, the service
   * account's token (read per request: a projected token is rotated) and CA from `dir`.
   */
  static inCluster(dir = SERVICE_ACCOUNT_DIR): KubeClient {
    const host = process.env.KUBERNETES_SERVICE_HOST;
    const port = process.env.KUBERNETES_SERVICE_PORT ?? "443";
    if (!host) {
      throw new CaravanError(
        "CONFIG",
        "KUBERNETES_SERVICE_HOST is not set: this runs in a pod (or with the variables a pod has)",
      );
    }
    const ca = readFileSync(join(dir, "ca.crt"));
    return new KubeClient({
      server: `https://${host.includes(":") ? `[${host}]` : host}:${port}`,
      context: "in-cluster",
      async authorize(options) {
        const token = readFileSync(join(dir, "token"), "utf8").trim();
        options.ca = ca;
        options.headers = { ...options.headers, Authorization: `Bearer ${token}` };
      },
    });
  }

  /** One API call. Resolves with the parsed JSON body; rejects with ApiError or CLUSTER_UNREACHABLE. */
  async call<T = any>(method: string, path: string, opts: CallOptions = {}): Promise<T> {
    const res = await this.send(method, path, opts);
    const text = await readBody(res);
    if ((res.statusCode ?? 500) >= 400) throw apiError(res.statusCode ?? 500, text);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** A streamed answer (logs): the response, once its status is known to be a success. */
  async stream(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    opts: { signal?: AbortSignal; timeoutMs?: number } = {},
  ): Promise<IncomingMessage> {
    const res = await this.send("GET", path, { query, ...opts });
    if ((res.statusCode ?? 500) >= 400) throw apiError(res.statusCode ?? 500, await readBody(res));
    return res;
  }

  /** Server-side apply of one object (created or updated; caravan owns the fields it sets). */
  apply<T = KubeObject>(
    object: KubeObject,
    opts: { dryRun?: boolean; fieldManager?: string } = {},
  ): Promise<T> {
    const path = resourcePath(object.kind, object.metadata.namespace, object.metadata.name);
    return this.call<T>("PATCH", path, {
      query: {
        fieldManager: opts.fieldManager ?? "caravan",
        force: true,
        fieldValidation: "Strict",
        ...(opts.dryRun ? { dryRun: "All" } : {}),
      },
      body: object,
      contentType: "application/apply-patch+yaml",
    });
  }

  list<T = any>(
    kind: ResourceKind,
    namespace: string | undefined,
    labelSelector?: string,
  ): Promise<ListResult<T>> {
    return this.call<ListResult<T>>("GET", resourcePath(kind, namespace), {
      query: { labelSelector },
    });
  }

  /** The object, or undefined when there is none. */
  async get<T = any>(kind: ResourceKind, namespace: string | undefined, name: string) {
    try {
      return await this.call<T>("GET", resourcePath(kind, namespace, name));
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return undefined;
      throw e;
    }
  }

  /** Deletes one object (its dependents in the background); false when it was already gone. */
  async delete(kind: ResourceKind, namespace: string | undefined, name: string): Promise<boolean> {
    try {
      await this.call("DELETE", resourcePath(kind, namespace, name), {
        body: { kind: "DeleteOptions", apiVersion: "v1", propagationPolicy: "Background" },
        contentType: "application/json",
      });
      return true;
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return false;
      throw e;
    }
  }

  close(): void {
    this.agent?.destroy();
  }

  private async send(method: string, path: string, opts: CallOptions): Promise<IncomingMessage> {
    this.calls.total++;
    this.calls.byMethod[method] = (this.calls.byMethod[method] ?? 0) + 1;
    if (method !== "GET") this.calls.writes++;
    const url = new URL(this.server + path);
    for (const [k, v] of Object.entries(opts.query ?? {}))
      if (v !== undefined) url.searchParams.set(k, String(v));
    const options: RequestOptions = { method, headers: { Accept: "application/json" } };
    await this.credentials.authorize(options);
    const body =
      opts.body === undefined
        ? undefined
        : Buffer.from(typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body));
    if (body) {
      options.headers = {
        ...options.headers,
        "Content-Type": opts.contentType ?? "application/json",
        "Content-Length": String(body.length),
      };
    }
    const secure = url.protocol === "https:";
    if (secure) {
      // One keep-alive agent with the cluster's TLS settings: polling reuses connections.
      this.agent ??= new Agent({
        keepAlive: true,
        maxSockets: 16,
        ...(options.ca ? { ca: options.ca } : {}),
        ...(options.cert ? { cert: options.cert } : {}),
        ...(options.key ? { key: options.key } : {}),
        ...(options.rejectUnauthorized !== undefined
          ? { rejectUnauthorized: options.rejectUnauthorized }
          : {}),
        ...(options.servername ? { servername: options.servername } : {}),
      });
      options.agent = this.agent;
    } else {
      delete options.agent;
    }
    if (opts.signal) options.signal = opts.signal;
    return new Promise<IncomingMessage>((resolve, reject) => {
      const req = (secure ? httpsRequest : httpRequest)(url, options, resolve);
      // 0: no timeout (a followed log may be silent for as long as it likes).
      const timeoutMs = opts.timeoutMs ?? 30_000;
      if (timeoutMs > 0)
        req.setTimeout(timeoutMs, () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on("error", (e) => {
        if ((e as Error).name === "AbortError") return reject(e);
        reject(
          new CaravanError(
            "CLUSTER_UNREACHABLE",
            `cannot reach the Kubernetes API at ${this.server} (context "${this.context}"): ${(e as Error).message}. Check that the cluster is up and KUBECONFIG / --context point at it`,
            { server: this.server, context: this.context },
          ),
        );
      });
      req.end(body);
    });
  }
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on("data", (c: Buffer) => chunks.push(c));
    res.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")));
    res.on("error", reject);
  });
}

function apiError(status: number, text: string): ApiError {
  let reason = "";
  let message = text.trim() || `HTTP ${status}`;
  try {
    const s = JSON.parse(text) as { reason?: string; message?: string };
    reason = s.reason ?? "";
    message = s.message ?? message;
  } catch {
    // not a Status object
  }
  return new ApiError(status, reason, message);
}
