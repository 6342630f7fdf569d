/**
 * caravan's gateway in a cluster: one per namespace, running the same gateway code as the
 * local control plane (gateway-main.ts). It is how an app with `requiresAuth` is reached from
 * outside: an Ingress (or anything a user points at it) sends the app's traffic to the
 * gateway's port for that app, the gateway checks the bearer token against the hashes in the
 * `caravan-tokens` Secret and forwards to the app's ready pods (from its EndpointSlices). It
 * also serves the run API (`CARAVAN_API_URL`) apps call tasks through.
 *
 * What it serves is read from the cluster, never pushed: routes are the app Services that carry
 * a public port annotation, so the gateway keeps serving what it last saw when nobody runs
 * caravan, and a token revoked is refused within a poll (one second).
 */
import { createHash } from "node:crypto";
import type { AppSpec } from "../contract.ts";
import type { KubeObject } from "./manifests.ts";
import { MANAGED_BY, POD_PATHS } from "./manifests.ts";

export const GATEWAY_NAME = "caravan-gateway";
/** Token hashes, one entry per token (written by `caravan token`, read by the gateway). */
export const TOKENS_SECRET = "caravan-tokens";
/** The run token apps present to the gateway's run API (the same for the whole namespace). */
export const RUN_TOKEN_KEY = "run-token";
/** The run API's port, on the pod and the Service. */
export const RUN_API_PORT = 8021;
/** Public ports are picked from here, one per app, kept while the app exists. */
const PUBLIC_PORTS = { first: 10_000, count: 20_000 };

export const GATEWAY_LABELS = {
  [MANAGED_BY]: "caravan",
  "app.kubernetes.io/component": "gateway",
} as const;

/** On an app's Service: how the gateway serves it. */
export const ROUTE_ANNOTATIONS = {
  /** The gateway's port for this app (its public endpoint). */
  port: "caravan.dev/public-port",
  requiresAuth: "caravan.dev/requires-auth",
  /** Longest wait for the app's answer, in ms ("0": none). */
  requestTimeout: "caravan.dev/request-timeout-ms",
} as const;

/** The field manager that owns one app's port of the gateway Service (so apps never fight). */
export function routeFieldManager(app: string): string {
  return `caravan-route-${app}`.slice(0, 128);
}

/** The gateway's in-cluster address. */
export function gatewayHost(namespace: string): string {
  return `${GATEWAY_NAME}.${namespace}.svc.cluster.local`;
}

export function runApiUrl(namespace: string): string {
  return `http://${gatewayHost(namespace)}:${RUN_API_PORT}`;
}

/**
 * The port an app gets on the gateway: the one it has, else its name's hashed slot, probing
 * past slots other apps took (`taken`: ports in use in the namespace).
 */
export function pickPublicPort(app: string, taken: Set<number>, current?: number): number {
  if (current) return current;
  const start = createHash("sha256").update(app).digest().readUInt32BE(0) % PUBLIC_PORTS.count;
  for (let i = 0; i < PUBLIC_PORTS.count; i++) {
    const port = PUBLIC_PORTS.first + ((start + i) % PUBLIC_PORTS.count);
    if (!taken.has(port)) return port;
  }
  throw new Error("no free gateway port left in this namespace");
}

/** The route annotations an app's Service carries. */
export function routeAnnotations(spec: AppSpec, port: number): Record<string, string> {
  return {
    [ROUTE_ANNOTATIONS.port]: String(port),
    [ROUTE_ANNOTATIONS.requiresAuth]: String(spec.requiresAuth),
    [ROUTE_ANNOTATIONS.requestTimeout]: String((spec.timeouts.request ?? 0) * 1000),
  };
}

/** The host an app's Ingress answers on, or undefined when it has no `ingress`. */
export function ingressHost(spec: AppSpec, domain?: string): string | undefined {
  if (!spec.ingress) return undefined;
  if (spec.ingress.customDomain) return spec.ingress.customDomain;
  if (spec.ingress.subdomain && domain) return `${spec.ingress.subdomain}.${domain}`;
  return undefined;
}

/**
 * An app's Ingress: to the gateway's port for it (which checks tokens), or straight to the
 * app's Service when it does not require auth.
 */
export function ingressObject(
  spec: AppSpec,
  namespace: string,
  labels: Record<string, string>,
  host: string,
  publicPort: number,
  className?: string,
): KubeObject {
  const backend = spec.requiresAuth
    ? { service: { name: GATEWAY_NAME, port: { number: publicPort } } }
    : { service: { name: spec.name, port: { name: "http" } } };
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "Ingress",
    metadata: { name: spec.name, namespace, labels },
    spec: {
      ...(className ? { ingressClassName: className } : {}),
      rules: [{ host, http: { paths: [{ path: "/", pathType: "Prefix", backend }] } }],
    },
  };
}

/** One app's entry in the gateway Service's ports (applied by the app's own field manager). */
export function gatewayRoutePort(namespace: string, port: number): KubeObject {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: GATEWAY_NAME, namespace },
    spec: {
      ports: [{ name: `p${port}`, port, targetPort: port, protocol: "TCP" }],
    },
  };
}

/** Removes an app's port from the gateway Service: its manager applies nothing. */
export function gatewayRouteRelease(namespace: string): KubeObject {
  return { apiVersion: "v1", kind: "Service", metadata: { name: GATEWAY_NAME, namespace } };
}

/**
 * The gateway's objects in a namespace: its service account and what it may read and write
 * (routes, endpoints, token hashes; task markers, Jobs and pods for runs), the Deployment
 * running caravan's runtime bundle, and its Service (the run API; apps' ports are added by
 * `gatewayRoutePort`).
 */
export function gatewayObjects(
  namespace: string,
  runtime: { name: string; items: { key: string; path: string }[] },
  image: string,
): KubeObject[] {
  const labels = { ...GATEWAY_LABELS };
  const meta = { name: GATEWAY_NAME, namespace, labels };
  const rule = (apiGroups: string[], resources: string[], verbs: string[], names?: string[]) => ({
    apiGroups,
    resources,
    verbs,
    ...(names ? { resourceNames: names } : {}),
  });
  return [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: meta },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "Role",
      metadata: meta,
      rules: [
        rule([""], ["services", "pods"], ["get", "list"]),
        rule(["discovery.k8s.io"], ["endpointslices"], ["list"]),
        rule([""], ["secrets"], ["get"], [TOKENS_SECRET, GATEWAY_NAME]),
        rule([""], ["configmaps"], ["get", "list", "create", "update", "patch", "delete"]),
        rule(["batch"], ["jobs"], ["get", "list", "create"]),
      ],
    },
    {
      apiVersion: "rbac.authorization.k8s.io/v1",
      kind: "RoleBinding",
      metadata: meta,
      roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: GATEWAY_NAME },
      subjects: [{ kind: "ServiceAccount", name: GATEWAY_NAME, namespace }],
    },
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: meta,
      spec: {
        replicas: 1,
        selector: { matchLabels: labels },
        strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: GATEWAY_NAME,
            enableServiceLinks: false,
            containers: [
              {
                name: "gateway",
                image,
                command: ["node", `${POD_PATHS.runtime}/${GATEWAY_ENTRY}.js`],
                env: [
                  {
                    name: "CARAVAN_GATEWAY_NAMESPACE",
                    valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } },
                  },
                ],
                ports: [{ name: "api", containerPort: RUN_API_PORT, protocol: "TCP" }],
                readinessProbe: {
                  httpGet: { path: "/v1/health", port: RUN_API_PORT },
                  periodSeconds: 2,
                },
                volumeMounts: [{ name: "runtime", mountPath: POD_PATHS.runtime, readOnly: true }],
              },
            ],
            volumes: [{ name: "runtime", configMap: { name: runtime.name, items: runtime.items } }],
          },
        },
      },
    },
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: meta,
      spec: {
        type: "ClusterIP",
        selector: labels,
        ports: [{ name: "api", port: RUN_API_PORT, targetPort: RUN_API_PORT, protocol: "TCP" }],
      },
    },
  ];
}

/** The gateway process's module in the compiled runtime (see runtime-build.ts). */
export const GATEWAY_ENTRY = "backends/kubernetes/gateway-main";

/** One token as the Secret keeps it (base64 of this JSON, under the token's id). */
export interface StoredToken {
  name: string;
  /** sha256 hex of the value. */
  hash: string;
  createdAt: string;
  revokedAt?: string;
}

export function decodeTokens(data: Record<string, string> | undefined): Map<string, StoredToken> {
  const out = new Map<string, StoredToken>();
  for (const [id, raw] of Object.entries(data ?? {})) {
    try {
      out.set(id, JSON.parse(Buffer.from(raw, "base64").toString("utf8")) as StoredToken);
    } catch {
      // not one of ours: ignored
    }
  }
  return out;
}

export function encodeToken(token: StoredToken): string {
  return Buffer.from(JSON.stringify(token)).toString("base64");
}
