/**
 * The gateway process a cluster runs (one per namespace; see cluster-gateway.ts): caravan's
 * gateway (../gateway.ts, the local one's code) with its routes, replicas and tokens read from
 * the cluster once a second, and the run API apps call tasks through.
 *
 * Compiled into caravan's runtime bundle, so it may import no package: only node and caravan's
 * own modules. Settings come from the environment:
 * - `CARAVAN_GATEWAY_NAMESPACE`: the namespace it serves (a pod's own, from the downward API);
 * - `KUBERNETES_SERVICE_HOST`/`_PORT` and `CARAVAN_SERVICE_ACCOUNT_DIR` (default: the pod's
 *   service account mount): the API server and the identity to read it with;
 * - `CARAVAN_GATEWAY_HOST` (default 0.0.0.0): where its listeners bind; `CARAVAN_GATEWAY_API_PORT`
 *   (default 8021): the run API's port;
 * - `CARAVAN_GATEWAY_UPSTREAM_HOST`: sends every app's traffic to this host (with the pods'
 *   ports) instead of the pods' addresses, for a gateway run outside the cluster (tests).
 */
import { timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { join } from "node:path";
import { CaravanError, isCaravanError } from "../../errors.ts";
import { Gateway, type RouteOptions } from "../gateway/index.ts";
import type { RunFilter, Scope } from "../contract.ts";
import { HTTP_STATUS_OF, ROUTES, runRequestOf } from "../http-routes.ts";
import { plausibleToken, tokenHash } from "../tokens.ts";
import { KubeClient, SERVICE_ACCOUNT_DIR } from "./client.ts";
import {
  GATEWAY_NAME,
  ROUTE_ANNOTATIONS,
  RUN_API_PORT,
  RUN_TOKEN_KEY,
  TOKENS_SECRET,
  decodeTokens,
} from "./cluster-gateway.ts";
import { MANAGED_BY, type KubeObject } from "./manifests.ts";
import { ClusterRuns } from "./runs.ts";

const POLL_MS = 1_000;
/** How long a replica that left the endpoints may finish its requests. */
const DRAIN_MS = 30_000;
const MAX_BODY = 1024 * 1024;

type Service = KubeObject & { spec?: { ports?: { port: number }[] } };
type Slice = KubeObject & {
  ports?: { port?: number }[];
  endpoints?: { addresses: string[]; conditions?: { ready?: boolean } }[];
};

export interface ClusterGatewaySettings {
  client: KubeClient;
  namespace: string;
  host: string;
  apiPort: number;
  upstreamHost?: string;
}

export class ClusterGateway {
  private readonly gateway: Gateway;
  private readonly runs: ClusterRuns;
  /** Live token hashes. */
  private hashes = new Set<string>();
  private runToken: Buffer | undefined;
  /** Per app: its port and the replica ids given to the gateway. */
  private readonly routes = new Map<string, { port: number; replicas: Set<string> }>();
  private timer?: NodeJS.Timeout;
  private api?: ReturnType<typeof createServer>;
  private stopped = false;
  /** Resolves after the first complete read of the cluster. */
  readonly synced: Promise<void>;
  private markSynced!: () => void;

  constructor(private readonly settings: ClusterGatewaySettings) {
    this.gateway = new Gateway(
      { authorize: (token) => plausibleToken(token) && this.hashes.has(tokenHash(token)) },
      { publicHost: settings.host },
    );
    this.runs = new ClusterRuns(settings.client, () => settings.namespace, settings.namespace);
    this.synced = new Promise((resolve) => (this.markSynced = resolve));
  }

  async start(): Promise<number> {
    this.api = createServer((req, res) => void this.serveApi(req, res));
    const port = await new Promise<number>((resolve, reject) => {
      this.api!.once("error", reject);
      this.api!.listen(this.settings.apiPort, this.settings.host, () =>
        resolve((this.api!.address() as { port: number }).port),
      );
    });
    void this.loop();
    return port;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await new Promise<void>((resolve) => (this.api ? this.api.close(() => resolve()) : resolve()));
    this.api?.closeAllConnections();
    await Promise.all([...this.routes.keys()].map((app) => this.gateway.close(app)));
    this.settings.client.close();
  }

  private async loop(): Promise<void> {
    try {
      await this.sync();
      this.markSynced();
    } catch (e) {
      // The cluster may be away for a while: keep serving what was last read.
      console.error(`[caravan gateway] reading the cluster failed: ${(e as Error).message}`);
    }
    if (!this.stopped) this.timer = setTimeout(() => void this.loop(), POLL_MS);
  }

  /** Reads routes, endpoints and tokens, and makes the gateway serve exactly that. */
  async sync(): Promise<void> {
    const { client, namespace } = this.settings;
    const managed = `${MANAGED_BY}=caravan`;
    const [services, slices, tokens, own] = await Promise.all([
      client.list<Service>("Service", namespace, managed),
      client.list<Slice>("EndpointSlice", namespace, managed),
      client.get<{ data?: Record<string, string> }>("Secret", namespace, TOKENS_SECRET),
      client.get<{ data?: Record<string, string> }>("Secret", namespace, GATEWAY_NAME),
    ]);
    this.hashes = new Set(
      [...decodeTokens(tokens?.data).values()].filter((t) => !t.revokedAt).map((t) => t.hash),
    );
    const runToken = own?.data?.[RUN_TOKEN_KEY];
    this.runToken = runToken
      ? Buffer.from(`Bearer ${Buffer.from(runToken, "base64").toString("utf8")}`)
      : undefined;

    const wanted = new Map<string, { port: number; options: RouteOptions }>();
    for (const s of services.items) {
      const a = s.metadata.annotations ?? {};
      const port = Number(a[ROUTE_ANNOTATIONS.port]);
      if (!port) continue;
      wanted.set(s.metadata.name, {
        port,
        options: {
          requiresAuth: a[ROUTE_ANNOTATIONS.requiresAuth] !== "false",
          requestTimeoutMs: Number(a[ROUTE_ANNOTATIONS.requestTimeout]) || 0,
        },
      });
    }
    for (const [app, route] of this.routes) {
      if (wanted.get(app)?.port === route.port) continue;
      this.routes.delete(app);
      await this.gateway.close(app);
    }
    for (const [app, { port, options }] of wanted) {
      let route = this.routes.get(app);
      if (!route) {
        try {
          // Internal listeners stay on loopback, on a port of the system's choice: unused here.
          await this.gateway.open(app, { public: port, internal: 0 }, options);
        } catch (e) {
          console.error(
            `[caravan gateway] ${app}: cannot listen on ${port}: ${(e as Error).message}`,
          );
          continue;
        }
        route = { port, replicas: new Set() };
        this.routes.set(app, route);
      } else this.gateway.setOptions(app, options);
      const ready = new Map<string, { host: string; port: number }>();
      for (const slice of slices.items) {
        if (slice.metadata.labels?.["kubernetes.io/service-name"] !== app) continue;
        const podPort = slice.ports?.[0]?.port;
        if (!podPort) continue;
        for (const e of slice.endpoints ?? []) {
          if (e.conditions?.ready === false || !e.addresses[0]) continue;
          ready.set(`${e.addresses[0]}:${podPort}`, {
            host: this.settings.upstreamHost ?? e.addresses[0],
            port: podPort,
          });
        }
      }
      for (const [id, at] of ready) {
        if (route.replicas.has(id)) continue;
        route.replicas.add(id);
        this.gateway.addReplica(app, { id, ...at });
      }
      for (const id of route.replicas) {
        if (ready.has(id)) continue;
        route.replicas.delete(id);
        void this.gateway.drain(app, id, DRAIN_MS);
      }
    }
  }

  /** The run API apps reach with `CARAVAN_API_URL` and the namespace's run token. */
  private async serveApi(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://gateway");
    const send = (status: number, body: unknown): void =>
      void res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    try {
      if (url.pathname === ROUTES.health) return send(200, { ok: true });
      const given = Buffer.from(req.headers.authorization ?? "");
      const expected = this.runToken;
      if (!expected || given.length !== expected.length || !timingSafeEqual(given, expected)) {
        throw new CaravanError(
          "UNAUTHORIZED",
          "missing or wrong run token: send 'Authorization: Bearer $CARAVAN_API_TOKEN'",
        );
      }
      const wait = Math.min(30_000, Math.max(0, Number(url.searchParams.get("wait")) || 0));
      if (req.method === "POST" && url.pathname === ROUTES.runs) {
        const run = await this.runs.start(runRequestOf(await readJson(req)), wait);
        return send(201, { run });
      }
      const prefix = `${ROUTES.runs}/`;
      if (req.method === "GET" && url.pathname.startsWith(prefix)) {
        const id = decodeURIComponent(url.pathname.slice(prefix.length));
        // The run token is this namespace's: runs elsewhere are none of its business.
        if (!id.startsWith(`${this.settings.namespace}/`))
          throw new CaravanError("NO_SUCH_RUN", `there is no run "${id}" in this namespace`);
        return send(200, { run: await this.runs.get(id, wait) });
      }
      if (req.method === "GET" && url.pathname === ROUTES.runs) {
        const q = url.searchParams;
        const project = q.get("project");
        const domain = q.get("domain");
        // The run token is this namespace's: without a scope, this namespace's runs (see the
        // ClusterRuns above; its identity can read no other namespace anyway).
        const scope: Scope | undefined = project && domain ? { project, domain } : undefined;
        const filter: RunFilter = {};
        if (q.get("task")) filter.task = q.get("task")!;
        if (q.get("status")) filter.status = q.get("status") as RunFilter["status"];
        filter.limit = Math.max(1, Math.min(1000, Number(q.get("limit")) || 100));
        return send(200, { runs: await this.runs.list(scope, filter) });
      }
      throw new CaravanError("NOT_FOUND", `no route ${req.method} ${url.pathname}`);
    } catch (e) {
      const error = isCaravanError(e)
        ? e
        : new CaravanError("INTERNAL", (e as Error)?.message ?? String(e));
      if (!res.headersSent) send(HTTP_STATUS_OF[error.code] ?? 422, { error: error.toJSON() });
    }
  }
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (c: Buffer) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(new CaravanError("USAGE", `a request body may be at most ${MAX_BODY} bytes`));
        req.destroy();
      } else chunks.push(c);
    });
    req.on("end", () => {
      try {
        resolve(chunks.length ? JSON.parse(Buffer.concat(chunks).toString("utf8")) : undefined);
      } catch {
        reject(new CaravanError("USAGE", "the request body is not JSON"));
      }
    });
    req.on("error", reject);
  });
}

async function main(): Promise<void> {
  const dir = process.env.CARAVAN_SERVICE_ACCOUNT_DIR ?? SERVICE_ACCOUNT_DIR;
  const namespace =
    process.env.CARAVAN_GATEWAY_NAMESPACE ?? readFileSync(join(dir, "namespace"), "utf8").trim();
  const gateway = new ClusterGateway({
    client: KubeClient.inCluster(dir),
    namespace,
    host: process.env.CARAVAN_GATEWAY_HOST ?? "0.0.0.0",
    apiPort: Number(process.env.CARAVAN_GATEWAY_API_PORT ?? RUN_API_PORT),
    ...(process.env.CARAVAN_GATEWAY_UPSTREAM_HOST
      ? { upstreamHost: process.env.CARAVAN_GATEWAY_UPSTREAM_HOST }
      : {}),
  });
  const port = await gateway.start();
  console.log(`[caravan gateway] namespace ${namespace}: run API on port ${port}`);
  await gateway.synced;
  console.log(`[caravan gateway] serving`);
  const shutdown = () => void gateway.stop().then(() => process.exit(0));
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
}

// Run when started as a program (the pod's command), not when imported by a test.
if (process.argv[1] && /gateway-main\.(js|ts)$/.test(process.argv[1])) {
  main().catch((e) => {
    console.error(`[caravan gateway] ${(e as Error).stack ?? e}`);
    process.exit(1);
  });
}
