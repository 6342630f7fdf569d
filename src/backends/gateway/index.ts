/**
 * The gateway in front of every app: one public listener (authenticated when the app requires
 * it) and one internal listener (for app-to-app calls, never authenticated) per app, both on
 * loopback, forwarding to the app's replicas with least-outstanding-requests balancing.
 * The local gateway process (`local/gateway-process/`, its workers) runs it; the cluster
 * gateway (`kubernetes/gateway-main.ts`) runs the same code in a pod.
 *
 * Built on node:http (the client side) and node:net (the app side) only. The hot path avoids
 * what it can: no header objects are built on either side (the request head is written from
 * the raw headers in one pass), each replica has its own pool of keep-alive connections read
 * by a small HTTP/1.1 response reader (destroying the pool cuts a drained replica), bodies
 * stream both ways and are never buffered.
 *
 * Beside it, one collaborator each: `route` (an app's replicas, balancing, waiting requests),
 * `request-head` (what goes upstream), `auth`, `exchange` (one proxied request), `tunnel`
 * (an upgrade), `upstream` (connection pools) with its `response-reader`, `metrics`.
 */
import { createServer } from "node:http";
import { Server as NetServer, type Socket } from "node:net";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import {
  authorized,
  isLogin,
  login,
  refusal,
  refusalBody,
  sessionCookie,
  unauthorizedBody,
  type AuthHooks,
} from "./auth.ts";
import { ClientConnection, type Listener } from "./client-connection.ts";
import { Exchange, NodeClient } from "./exchange.ts";
import { exposition, type AppStats, type Gauges } from "./metrics.ts";
import { requestHead } from "./request-head.ts";
import { ReplicaState, Route, type RouteOptions } from "./route.ts";
import type { RecordSpan, SpanBudget } from "./trace.ts";
import { Tunnel, rawReply } from "./tunnel.ts";

export { LOGIN_PATH, SESSION_COOKIE, sessionCookie } from "./auth.ts";
export type { AppStats, Gauges } from "./metrics.ts";
export { Traffic, exposition } from "./metrics.ts";
export type { RouteOptions } from "./route.ts";
export type { GatewaySpan } from "./trace.ts";

export interface Replica {
  id: string;
  /** An app process listening on host:port (a local process: 127.0.0.1, the default). */
  port: number;
  /** Where it listens, when not on this machine's loopback (a pod's address in a cluster). */
  host?: string;
}

export interface GatewayOptions {
  /**
   * The address public listeners bind (default 127.0.0.1). A gateway inside a cluster binds
   * every interface; internal listeners always stay on loopback.
   */
  publicHost?: string;
  /**
   * Makes `server` listen on host:port and gives the port; by default it binds the port. The
   * gateway process's workers listen on sockets their primary holds instead.
   */
  listen?(server: Server, port: number, host: string): Promise<number>;
}

export interface GatewayHooks extends AuthHooks {
  /**
   * Called when a request arrives for an app with no ready replica (scale-from-zero or a
   * restart); the request waits (up to the app's start timeout which the hook enforces) until
   * addReplica is called; if the promise rejects, the request gets 503 with the message.
   * Concurrent arrivals share one call. Call addReplica before the promise resolves: requests
   * still waiting when it resolves get 503.
   */
  wake?(app: string): Promise<void>;
  /**
   * Takes the gateway's span of each forwarded request (`trace.ts`), after its response; absent,
   * the gateway neither records spans nor touches `traceparent` (no cost).
   */
  recordSpan?: RecordSpan;
  /**
   * A budget of spans, spent before any work is done for them rather than spans made and then
   * dropped; absent, every request of a traced app is traced. `take` is asked as a traced
   * app's request is read: false forwards it untraced (no ids, its `traceparent` as it came, no
   * span). `give` undoes that ask for a request not forwarded after all (refused, 401, or
   * handed to node's http server, which asks again): `wasTraced`, what `take` answered.
   */
  spanBudget?: SpanBudget;
}

export interface AppLoad {
  /** Replicas taking new requests (draining ones are left out). */
  replicas: { id: string; port: number; inFlight: number }[];
  /** Requests (and upgraded connections) in flight on any replica, draining ones included. */
  inFlight: number;
  /** Requests queued for a replica (while waking the app). */
  waiting: number;
  /** Replicas draining. */
  draining: number;
  /** Now while anything is in flight or waiting; else when the last request ended (or the app was opened). */
  lastActiveAt: number;
}

const HOST = "127.0.0.1";
const noop = () => {};

export class Gateway {
  private readonly routes = new Map<string, Route>();
  private sweeper?: NodeJS.Timeout;

  constructor(
    private readonly hooks: GatewayHooks,
    private readonly options: GatewayOptions = {},
  ) {}

  /** Listens on the app's public and internal ports (127.0.0.1 both). Idempotent for the same ports; update options otherwise. */
  async open(
    app: string,
    ports: { public: number; internal: number },
    options: RouteOptions,
  ): Promise<void> {
    let route = this.routes.get(app);
    let moved: Promise<void> = Promise.resolve();
    if (route) {
      route.options = { ...options };
      const same =
        route.requested.public === ports.public && route.requested.internal === ports.internal;
      if (same) return route.opening;
      // New ports: the replicas, the queue and the stats stay; the listeners move. Requested
      // before anything is awaited, so an open for the same ports meanwhile waits for this one
      // instead of listening a second time.
      const old = route;
      const previous = old.opening;
      old.requested = { ...ports };
      moved = (async () => {
        await previous?.catch(noop);
        await closeServers(old.servers, old.clients);
        old.servers = [];
      })();
    } else {
      route = new Route(app, ports, options, this.hooks);
      this.routes.set(app, route);
      // Idle upstream connections past their keep-alive time are closed once a second.
      this.sweeper ??= setInterval(() => this.sweep(), 1000).unref();
    }
    const r = route;
    r.opening = (async () => {
      await moved;
      const pub = this.server(r, true);
      const internal = this.server(r, false);
      r.servers = [pub, internal];
      try {
        const listenOn = this.options.listen ?? listen;
        const [p, i] = await Promise.all([
          listenOn(pub, ports.public, this.options.publicHost ?? HOST),
          listenOn(internal, ports.internal, HOST),
        ]);
        r.ports = { public: p, internal: i };
      } catch (err) {
        await closeServers(r.servers, r.clients);
        r.servers = [];
        this.forget(r);
        throw err;
      }
    })();
    return r.opening;
  }

  /** The ports actually listened on (useful when `open` was given port 0). */
  addresses(app: string): { public: number; internal: number } | undefined {
    const route = this.routes.get(app);
    return route ? { ...route.ports } : undefined;
  }

  /** A no-op when the app is not open (as for addReplica). */
  setOptions(app: string, options: RouteOptions): void {
    const route = this.routes.get(app);
    if (route) route.options = { ...options };
  }

  /**
   * Adds a ready replica (replacing one with the same id) and serves the waiting requests.
   * A no-op when the app is not open: it may have been closed while its process started.
   */
  addReplica(app: string, replica: Replica): void {
    const route = this.routes.get(app);
    if (!route) return;
    const i = route.ready.findIndex((r) => r.id === replica.id);
    if (i >= 0) {
      const old = route.ready[i]!;
      if (old.port === replica.port && old.host === (replica.host ?? HOST)) return;
      // Same id, new port: the old process gets no new requests, finishes what it has.
      void this.retire(route, old, Infinity);
    }
    route.ready.push(new ReplicaState(replica.id, replica.port, replica.host ?? HOST));
    route.flushQueue();
  }

  /** Stop sending new requests to this replica; resolves once its in-flight requests (and upgraded sockets) finished, or after graceMs (then they are cut). */
  drain(app: string, replicaId: string, graceMs: number): Promise<void> {
    const route = this.routes.get(app);
    if (!route) return Promise.resolve();
    const replica =
      route.ready.find((r) => r.id === replicaId) ??
      [...route.drainingSet].find((r) => r.id === replicaId);
    if (!replica) return Promise.resolve();
    return this.retire(route, replica, graceMs);
  }

  private retire(route: Route, replica: ReplicaState, graceMs: number): Promise<void> {
    if (replica.drained) return replica.drained;
    replica.draining = true;
    const i = route.ready.indexOf(replica);
    if (i >= 0) route.ready.splice(i, 1);
    route.drainingSet.add(replica);
    replica.drained = new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const finish = () => {
        clearTimeout(timer);
        replica.onIdle = undefined;
        route.drainingSet.delete(replica);
        // Closes idle keep-alive connections too, so the app's graceful close is quick.
        replica.destroy();
        resolve();
      };
      if (replica.inFlight === 0) return finish();
      replica.onIdle = finish;
      if (graceMs !== Infinity) timer = setTimeout(finish, Math.max(0, graceMs));
    });
    return replica.drained;
  }

  /** Load view for the autoscaler: replicas with their in-flight counts, total in flight, and when the app last had a request in flight (ms epoch). */
  load(app: string): AppLoad {
    const route = this.routes.get(app);
    if (!route) return { replicas: [], inFlight: 0, waiting: 0, draining: 0, lastActiveAt: 0 };
    const busy = route.inFlight > 0 || route.queue.length > 0;
    return {
      replicas: route.ready.map((r) => ({ id: r.id, port: r.port, inFlight: r.inFlight })),
      inFlight: route.inFlight,
      waiting: route.queue.length,
      draining: route.drainingSet.size,
      lastActiveAt: busy ? Date.now() : route.lastActiveAt,
    };
  }

  stats(app: string): AppStats {
    const route = this.routes.get(app);
    if (!route) return { requests: 0, errors: 0, latency: { p50: 0, p99: 0, count: 0 } };
    return route.traffic.stats();
  }

  /** Prometheus text exposition of every app's traffic (see `metrics.ts`). */
  metrics(): string {
    return exposition(this.gauges());
  }

  /** Each app's traffic and gauges (what `metrics` shows; several gateway processes' are merged). */
  gauges(): Gauges[] {
    return [...this.routes.values()].map((r) => ({
      app: r.app,
      traffic: r.traffic,
      inFlight: r.inFlight,
      waiting: r.queue.length,
      replicas: r.ready.length,
    }));
  }

  /** Stops listening for this app (drains nothing): its connections and waiting requests are cut. */
  async close(app: string): Promise<void> {
    const route = this.routes.get(app);
    if (!route) return;
    this.forget(route);
    await route.opening?.catch(noop);
    route.failQueue(503, `${app}: the gateway closed`);
    const replicas = [...route.ready, ...route.drainingSet];
    route.ready = [];
    await closeServers(route.servers, route.clients);
    route.servers = [];
    for (const r of replicas) {
      r.destroy();
      r.onIdle?.();
    }
  }

  private forget(route: Route): void {
    if (this.routes.get(route.app) === route) this.routes.delete(route.app);
    if (this.routes.size === 0) {
      clearInterval(this.sweeper);
      this.sweeper = undefined;
    }
  }

  private sweep(): void {
    const now = Date.now();
    for (const route of this.routes.values()) {
      for (const r of route.ready) r.pool.sweep(now);
      for (const r of route.drainingSet) r.pool.sweep(now);
    }
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.routes.keys()].map((app) => this.close(app)));
  }

  /**
   * Stops accepting, for another process that listens on the same sockets (they stay open
   * there), and lets every connection finish: each is closed after its response in progress
   * (or the next one), an idle one by its keep-alive timeout. Resolves once none is left.
   */
  async stopAccepting(): Promise<void> {
    const closing: Promise<void>[] = [];
    for (const route of this.routes.values()) {
      route.retiring = true;
      // net.Server's close: http.Server's would also cut the idle keep-alive connections,
      // racing a request the client may be sending on one right then.
      for (const s of route.servers)
        if (s.listening)
          closing.push(
            new Promise<void>((resolve) => NetServer.prototype.close.call(s, () => resolve())),
          );
    }
    await Promise.all(closing);
  }

  private server(route: Route, pub: boolean): Server {
    // requestTimeout 0: uploads may stream for as long as they need (headersTimeout stays).
    const server = createServer({ requestTimeout: 0 }, (req, res) => {
      try {
        this.onRequest(route, req, res, pub);
      } catch (err) {
        // A bug here must cost one request, not the process that hosts the gateway.
        internalError(res, route.app, err);
      }
    });
    server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) => {
      try {
        this.onUpgrade(route, req, socket, head, pub);
      } catch {
        socket.destroy();
      }
    });
    // Connections come to the fast path first; node's own connection listener takes those
    // (with the bytes read) whose requests are not plain.
    const nodeConnection = server.listeners("connection");
    if (nodeConnection.length === 1) {
      const take = nodeConnection[0] as (socket: Socket) => void;
      server.removeListener("connection", take);
      const listener: Listener = {
        route,
        pub,
        hooks: this.hooks,
        handOver(socket, read) {
          if (read) socket.unshift(read);
          take.call(server, socket);
          socket.resume();
        },
      };
      server.on("connection", (socket: Socket) => new ClientConnection(listener, socket));
    }
    return server;
  }

  private onRequest(route: Route, req: IncomingMessage, res: ServerResponse, pub: boolean): void {
    const start = performance.now();
    // Retiring: the client is told to take its next request elsewhere (Connection: close).
    if (route.retiring) res.shouldKeepAlive = false;
    if (pub && isLogin(req.url!)) {
      login(this.hooks, route, req, res, start);
      return;
    }
    const head = this.head(route, req, false, pub);
    const refused = refusal(route.app, pub, pub ? route.ports.public : route.ports.internal, head);
    if (refused) {
      route.untrace(head);
      const body = refusalBody(refused[1]);
      res.writeHead(refused[0], {
        "content-type": "application/json; charset=utf-8",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
      res.once("close", () => route.traffic.record(refused[0], performance.now() - start));
      return;
    }
    if (!authorized(this.hooks, route, pub, head)) {
      route.untrace(head);
      const body = unauthorizedBody(route.app);
      res.writeHead(401, {
        "content-type": "application/json; charset=utf-8",
        "content-length": Buffer.byteLength(body),
        "www-authenticate": `Bearer realm="caravan"`,
      });
      res.end(body);
      res.once("close", () => route.traffic.record(401, performance.now() - start));
      return;
    }
    const client = new NodeClient(res);
    const ex = new Exchange(route, req.method!, client, head, pub, start, req);
    const replica = route.pick();
    if (replica) ex.dispatch(replica);
    else ex.enqueue();
  }

  private onUpgrade(
    route: Route,
    req: IncomingMessage,
    socket: Socket,
    body: Buffer,
    pub: boolean,
  ): void {
    const head = this.head(route, req, true, pub);
    const refused = refusal(route.app, pub, pub ? route.ports.public : route.ports.internal, head);
    if (refused) {
      socket.on("error", noop);
      rawReply(socket, refused[0], refusalBody(refused[1]));
      route.traffic.record(refused[0], -1);
      return;
    }
    if (!authorized(this.hooks, route, pub, head)) {
      socket.on("error", noop);
      rawReply(
        socket,
        401,
        unauthorizedBody(route.app),
        `WWW-Authenticate: Bearer realm="caravan"\r\n`,
      );
      route.traffic.record(401, -1);
      return;
    }
    const tunnel = new Tunnel(route, socket, head.text, body);
    const replica = route.pick();
    if (replica) tunnel.dispatch(replica);
    else tunnel.enqueue();
  }

  private head(route: Route, req: IncomingMessage, upgrade: boolean, pub: boolean) {
    const client = req.socket.remoteAddress ?? "";
    const session = sessionCookie(route.ports.public);
    // An upgrade (a WebSocket) is not traced: its tunnel has no response to end a span.
    const traced = !upgrade && route.traceNext();
    return requestHead(req, client, upgrade, pub, route.ports.internal, session, traced);
  }
}

function internalError(res: ServerResponse, app: string, err: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const body = `${app}: gateway error: ${err instanceof Error ? err.message : String(err)}\n`;
  res.writeHead(500, { "content-type": "text/plain; charset=utf-8" });
  res.end(body);
}

function listen(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve((server.address() as { port: number }).port);
    });
  });
}

/** Closes the listeners and cuts their connections (the fast path's `clients` too). */
function closeServers(servers: Server[], clients: Set<Socket>): Promise<void> {
  const closing = Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          // Also one never listened on (a standby worker's): its 'close' tells its owner.
          s.close(() => resolve());
          s.closeAllConnections();
        }),
    ),
  ).then(noop);
  for (const c of clients) c.destroy();
  clients.clear();
  return closing;
}
