/**
 * How apps are reached on a cluster, for the backend: the namespace's gateway (applied once per
 * namespace, removed with the last environment), each app's port on it (picked once and kept on
 * the app's Service), and an Ingress for apps that ask for one.
 */
import { randomBytes } from "node:crypto";
import { CaravanError } from "../../errors.ts";
import type { KubernetesConfig } from "../../sdk/config.ts";
import type { AppSpec, DeployRequest, Endpoints } from "../contract.ts";
import { ApiError, resourcePath, type KubeClient, type ResourceKind } from "./client.ts";
import {
  GATEWAY_LABELS,
  GATEWAY_NAME,
  ROUTE_ANNOTATIONS,
  RUN_TOKEN_KEY,
  gatewayHost,
  gatewayObjects,
  gatewayRoutePort,
  gatewayRouteRelease,
  ingressHost,
  ingressObject,
  pickPublicPort,
  routeFieldManager,
} from "./cluster-gateway.ts";
import { runtimeContent } from "./content.ts";
import { DEFAULT_IMAGE } from "../../sdk/image.ts";
import { LABELS, MANAGED_BY, endpointOf, type KubeObject } from "./manifests.ts";

/** The gateway's own objects, removed in this order with the namespace's last environment. */
const GATEWAY_OBJECT_KINDS: ResourceKind[] = [
  "Deployment",
  "Service",
  "RoleBinding",
  "Role",
  "ServiceAccount",
];

export class Exposure {
  private readonly gateways = new Map<string, Promise<void>>();
  /** Per namespace: each app's gateway port (from the Services' annotations), listed once. */
  private readonly ports = new Map<string, Promise<Map<string, number>>>();

  constructor(
    private readonly client: KubeClient,
    private readonly config: KubernetesConfig,
    private readonly apply: (object: KubeObject, env: string) => Promise<void>,
    private readonly upload: (
      req: DeployRequest,
      namespace: string,
      o: KubeObject[],
    ) => Promise<void>,
  ) {}

  /** Refuses an `ingress.subdomain` that cannot become a host. */
  check(spec: AppSpec): void {
    if (spec.ingress?.subdomain && !spec.ingress.customDomain && !this.config.ingress?.domain) {
      throw new CaravanError(
        "CONFIG",
        `app "${spec.name}": ingress.subdomain "${spec.ingress.subdomain}" needs a domain to complete it on a cluster: set kubernetes: { ingress: { domain: "apps.example.com" } } in caravan.config.*, or give ingress.customDomain`,
        { app: spec.name },
      );
    }
  }

  /** The namespace's gateway (once per namespace and backend object; applying is idempotent). */
  ensureGateway(namespace: string, req: DeployRequest): Promise<void> {
    let done = this.gateways.get(namespace);
    if (!done) {
      done = (async () => {
        const runtime = runtimeContent(req, namespace);
        await this.upload(req, namespace, [runtime.object]);
        await this.ensureRunToken(namespace);
        const objects = gatewayObjects(
          namespace,
          { name: runtime.object.metadata.name, items: runtime.items },
          // The image JS apps run in: node is all the gateway needs.
          DEFAULT_IMAGE,
        );
        for (const o of objects) await this.apply(o, GATEWAY_NAME);
      })();
      this.gateways.set(namespace, done);
      done.catch(() => this.gateways.delete(namespace));
    }
    return done;
  }

  /** The app's port on the gateway: the one its Service has, else a free one. */
  async portOf(namespace: string, app: string): Promise<number> {
    const ports = await this.portsIn(namespace);
    let port = ports.get(app);
    if (!port) {
      port = pickPublicPort(app, new Set(ports.values()));
      ports.set(app, port);
    }
    return port;
  }

  /** Opens the app's port on the gateway Service and writes (or removes) its Ingress. */
  async publish(
    req: DeployRequest & { spec: AppSpec },
    namespace: string,
    port: number,
    labels: Record<string, string>,
  ): Promise<void> {
    await this.client.apply(gatewayRoutePort(namespace, port), {
      fieldManager: routeFieldManager(req.name),
    });
    const host = ingressHost(req.spec, this.config.ingress?.domain);
    if (host) {
      await this.apply(
        ingressObject(req.spec, namespace, labels, host, port, this.config.ingress?.className),
        req.name,
      );
    } else await this.client.delete("Ingress", namespace, req.name);
  }

  /**
   * The app's endpoints: in the cluster its Service; its public one the Ingress or the gateway
   * (the Service, for an app deployed before it had a gateway port).
   */
  endpoints(namespace: string, app: string, port: number, host?: string): Endpoints {
    const internalEndpoint = endpointOf(app, namespace);
    const endpoint = host
      ? `http://${host}`
      : port > 0
        ? `http://${gatewayHost(namespace)}:${port}`
        : internalEndpoint;
    return { endpoint, internalEndpoint };
  }

  /** After a delete: the app's port goes; with the last environment, the gateway goes too. */
  async release(namespace: string, apps: string[]): Promise<void> {
    for (const app of apps) {
      await this.client
        .apply(gatewayRouteRelease(namespace), { fieldManager: routeFieldManager(app) })
        .catch((e) => (e instanceof ApiError && e.status === 404 ? undefined : Promise.reject(e)));
    }
    this.ports.delete(namespace);
    const managed = `${MANAGED_BY}=caravan`;
    const [deployments, markers] = await Promise.all([
      this.client.list<KubeObject>("Deployment", namespace, managed),
      this.client.list<KubeObject>("ConfigMap", namespace, `${managed},${LABELS.kind}=task`),
    ]);
    const others = deployments.items.filter((d) => d.metadata.name !== GATEWAY_NAME);
    if (others.length || markers.items.length) return;
    // Token hashes and the run token stay: a later deploy serves with them again.
    for (const kind of GATEWAY_OBJECT_KINDS)
      await this.client.delete(kind, namespace, GATEWAY_NAME);
    this.gateways.delete(namespace);
  }

  /** The namespace's run token (apps read it from the Secret; it is never printed). */
  private async ensureRunToken(namespace: string): Promise<void> {
    try {
      await this.client.call("POST", resourcePath("Secret", namespace), {
        body: {
          apiVersion: "v1",
          kind: "Secret",
          metadata: { name: GATEWAY_NAME, namespace, labels: { ...GATEWAY_LABELS } },
          type: "Opaque",
          data: {
            [RUN_TOKEN_KEY]: Buffer.from(randomBytes(32).toString("base64url")).toString("base64"),
          },
        },
      });
    } catch (e) {
      // Made by an earlier deploy: the apps running hold it, it must not change.
      if (!(e instanceof ApiError && e.status === 409)) throw e;
    }
  }

  private portsIn(namespace: string): Promise<Map<string, number>> {
    let listing = this.ports.get(namespace);
    if (!listing) {
      listing = this.client
        .list<KubeObject>("Service", namespace, `${MANAGED_BY}=caravan`)
        .then((l) => {
          const out = new Map<string, number>();
          for (const s of l.items) {
            const port = Number(s.metadata.annotations?.[ROUTE_ANNOTATIONS.port]);
            if (port) out.set(s.metadata.name, port);
          }
          return out;
        });
      this.ports.set(namespace, listing);
      listing.catch(() => this.ports.delete(namespace));
    }
    return listing;
  }
}
