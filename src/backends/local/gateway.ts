/**
 * The gateway in front of every app: one public listener (authenticated when the app requires
 * it) and one internal listener (for app-to-app calls, never authenticated) per app, both on
 * loopback, forwarding to the app's replicas with least-outstanding-requests balancing.
 *
 * Built on node:http and node:net only. The hot path avoids what it can: headers travel as
 * flat raw arrays (no header objects are built on either side), each replica has its own
 * keep-alive agent (connections are reused, and closing the agent cuts a drained replica),
 * bodies are piped both ways and never buffered.
 */
import { Agent, STATUS_CODES, createServer, request } from "node:http";
import type { ClientRequest, IncomingMessage, Server, ServerResponse } from "node:http";
import { connect } from "node:net";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { performance } from "node:perf_hooks";

export interface Replica {
  id: string;
  /** An app process listening on 127.0.0.1:port. */
  port: number;
}

export interface RouteOptions {
  requiresAuth: boolean;
  /** Longest wait for the upstream response's headers, in ms; 0 = none. */
  requestTimeoutMs: number;
}

export interface GatewayHooks {
  /** Public side only: true when the bearer token or session cookie value is valid. */
  authorize(token: string): boolean;
  /** Redeems a one-time login code (from a link), returning a session value to set as a cookie, or undefined. */
  redeem?(code: string): string | undefined;
  /**
   * Called when a request arrives for an app with no ready replica (scale-from-zero or a
   * restart); the request waits (up to the app's start timeout which the hook enforces) until
   * addReplica is called; if the promise rejects, the request gets 503 with the message.
   * Concurrent arrivals share one call. Call addReplica before the promise resolves: requests
   * still waiting when it resolves get 503.
   */
  wake?(app: string): Promise<void>;
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

export interface AppStats {
  requests: number;
  /** 5xx answers, produced by the gateway or the app. */
  errors: number;
  /** Whole exchanges (arrival to last byte sent), in ms, since the app was opened. */
  latency: { p50: number; p99: number; count: number };
}

export const SESSION_COOKIE = "caravan_session";
export const LOGIN_PATH = "/_caravan/login";

const HOST = "127.0.0.1";
const noop = () => {};

/** Latency histogram: 8 buckets per doubling from 10 µs (≈9% resolution), for quantiles. */
const FINE_PER_OCTAVE = 8;
const FINE_BASE_MS = 0.01;
const FINE_BUCKETS = 8 * 25; // 10 µs × 2^25 ≈ 93 h
/** Prometheus histogram bounds, in seconds. */
const PROM_BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

class Histogram {
  readonly fine = new Float64Array(FINE_BUCKETS);
  readonly prom = new Float64Array(PROM_BOUNDS.length + 1);
  count = 0;
  sumSeconds = 0;

  record(ms: number): void {
    this.count++;
    const s = ms / 1000;
    this.sumSeconds += s;
    let i = ms <= FINE_BASE_MS ? 0 : Math.ceil(Math.log2(ms / FINE_BASE_MS) * FINE_PER_OCTAVE);
    if (i >= FINE_BUCKETS) i = FINE_BUCKETS - 1;
    this.fine[i]!++;
    let p = 0;
    while (p < PROM_BOUNDS.length && s > PROM_BOUNDS[p]!) p++;
    this.prom[p]!++;
  }

  /** The q-quantile in ms: the upper bound of the bucket holding it. */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < FINE_BUCKETS; i++) {
      seen += this.fine[i]!;
      if (seen >= rank) return FINE_BASE_MS * 2 ** (i / FINE_PER_OCTAVE);
    }
    return FINE_BASE_MS * 2 ** (FINE_BUCKETS / FINE_PER_OCTAVE);
  }
}

class ReplicaState {
  readonly agent: Agent;
  inFlight = 0;
  draining = false;
  /** Upgraded (WebSocket) connections, cut when a drain's grace runs out. */
  readonly upgrades = new Set<Socket>();
  onIdle?: () => void;
  drained?: Promise<void>;

  constructor(
    readonly id: string,
    readonly port: number,
  ) {
    // LIFO reuse keeps few hot connections; noDelay: a proxy must not add Nagle delays.
    this.agent = new Agent({ keepAlive: true, scheduling: "lifo", noDelay: true });
  }
}

/** A request or upgrade waiting for a replica. */
interface Pending {
  dispatch(replica: ReplicaState): void;
  fail(status: number, message: string): void;
}

class Route {
  options: RouteOptions;
  requested: { public: number; internal: number };
  servers: Server[] = [];
  ports = { public: 0, internal: 0 };
  opening?: Promise<void>;
  /** Replicas taking new requests. */
  ready: ReplicaState[] = [];
  readonly drainingSet = new Set<ReplicaState>();
  rr = 0;
  inFlight = 0;
  queue: Pending[] = [];
  waking = false;
  lastActiveAt = Date.now();
  closed = false;
  // Stats: answers by status class (index 1–5), 5xx, latency.
  readonly classes = [0, 0, 0, 0, 0, 0];
  requests = 0;
  errors = 0;
  readonly latency = new Histogram();

  constructor(
    readonly app: string,
    ports: { public: number; internal: number },
    options: RouteOptions,
  ) {
    this.requested = { ...ports };
    this.options = { ...options };
  }

  /** Least outstanding requests; ties go round robin, starting after the last pick. */
  pick(exclude?: ReplicaState): ReplicaState | undefined {
    const list = this.ready;
    const n = list.length;
    if (n === 1) return list[0] === exclude ? undefined : list[0];
    let best: ReplicaState | undefined;
    let bestIndex = 0;
    const start = this.rr % n || 0;
    for (let k = 0; k < n; k++) {
      const i = start + k < n ? start + k : start + k - n;
      const r = list[i]!;
      if (r === exclude) continue;
      if (best === undefined || r.inFlight < best.inFlight) {
        best = r;
        bestIndex = i;
        if (r.inFlight === 0) break;
      }
    }
    this.rr = bestIndex + 1;
    return best;
  }

  acquire(replica: ReplicaState): void {
    replica.inFlight++;
    this.inFlight++;
  }

  release(replica: ReplicaState): void {
    replica.inFlight--;
    if (--this.inFlight === 0) this.lastActiveAt = Date.now();
    if (replica.inFlight === 0 && replica.onIdle) replica.onIdle();
  }

  record(status: number, ms: number): void {
    this.requests++;
    this.classes[(status / 100) | 0]!++;
    if (status >= 500) this.errors++;
    if (ms >= 0) this.latency.record(ms);
  }

  dequeue(p: Pending): void {
    const i = this.queue.indexOf(p);
    if (i >= 0) this.queue.splice(i, 1);
  }

  flushQueue(): void {
    while (this.queue.length > 0) {
      const replica = this.pick();
      if (!replica) return;
      this.queue.shift()!.dispatch(replica);
    }
  }

  failQueue(status: number, message: string): void {
    const queue = this.queue;
    this.queue = [];
    for (const p of queue) p.fail(status, message);
  }
}

// Request headers not forwarded (hop-by-hop, RFC 9110 §7.6.1). Transfer-Encoding is kept:
// node re-frames the body it writes from it. X-Forwarded-For is rebuilt.
const DROP_REQUEST = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "te",
  "trailer",
  "upgrade",
]);
// Response headers not forwarded: node frames the response to the client itself.
const DROP_RESPONSE = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);
// Lengths of every header name the request scan acts on: other names skip toLowerCase.
const INTERESTING_LENGTHS = new Set(
  [
    ...DROP_REQUEST,
    "host",
    "cookie",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "content-length",
    "transfer-encoding",
  ].map((h) => h.length),
);
const RESPONSE_LENGTHS = new Set([...DROP_RESPONSE, "content-length"].map((h) => h.length));

/**
 * What one pass over a request's raw headers found. Reused across requests (everything on
 * the hot path is synchronous), so the scan allocates only the forwarded header array.
 */
const scan = {
  authorization: undefined as string | undefined,
  session: undefined as string | undefined,
  hasBody: false,
};

/**
 * The headers to send upstream, as a flat [name, value, ...] array; fills `scan`.
 * `upgrade` keeps Connection and Upgrade (they are the point of an upgrade request).
 */
function forwardHeaders(req: IncomingMessage, upgrade: boolean, port: number): string[] {
  const raw = req.rawHeaders;
  const out: string[] = [];
  let connection: string | undefined;
  let xff: string | undefined;
  let host: string | undefined;
  let proto = false;
  let fwdHost = false;
  scan.authorization = undefined;
  scan.session = undefined;
  scan.hasBody = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    if (!INTERESTING_LENGTHS.has(name.length)) {
      out.push(name, value);
      continue;
    }
    const lower = name.toLowerCase();
    switch (lower) {
      case "host":
        host = value;
        break;
      case "authorization":
        scan.authorization = value;
        break;
      case "cookie":
        if (value.includes(SESSION_COOKIE)) {
          const rest = takeSession(value);
          if (rest) out.push(name, rest);
          continue;
        }
        break;
      case "x-forwarded-for":
        xff = xff === undefined ? value : `${xff}, ${value}`;
        continue;
      case "x-forwarded-proto":
        proto = true;
        break;
      case "x-forwarded-host":
        fwdHost = true;
        break;
      case "content-length":
        if (value !== "0") scan.hasBody = true;
        break;
      case "transfer-encoding":
        scan.hasBody = true;
        break;
      case "connection":
        connection = connection === undefined ? value : `${connection}, ${value}`;
        if (upgrade) break;
        continue;
      case "upgrade":
        if (upgrade) break;
        continue;
      default:
        if (DROP_REQUEST.has(lower)) continue;
    }
    out.push(name, value);
  }
  // An HTTP/1.0 client may send no Host; node servers reject an HTTP/1.1 request without one.
  if (host === undefined) out.push("host", `${HOST}:${port}`);
  const client = req.socket.remoteAddress ?? "";
  out.push("x-forwarded-for", xff === undefined ? client : `${xff}, ${client}`);
  if (!proto) out.push("x-forwarded-proto", "http");
  if (!fwdHost && host !== undefined) out.push("x-forwarded-host", host);
  if (connection !== undefined) return dropConnectionListed(out, connection, upgrade);
  return out;
}

/** Headers named in Connection are hop-by-hop too (rare: only then is the array filtered). */
function dropConnectionListed(headers: string[], connection: string, upgrade: boolean): string[] {
  const listed = connection
    .toLowerCase()
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t && t !== "close" && t !== "keep-alive" && !(upgrade && t === "upgrade"));
  if (listed.length === 0) return headers;
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) {
    if (!listed.includes(headers[i]!.toLowerCase())) out.push(headers[i]!, headers[i + 1]!);
  }
  return out;
}

/** Removes the session cookie from a Cookie header, noting its value in `scan`. */
function takeSession(cookie: string): string {
  const kept: string[] = [];
  for (const part of cookie.split(";")) {
    const pair = part.trim();
    if (pair.startsWith(`${SESSION_COOKIE}=`)) {
      scan.session ??= pair.slice(SESSION_COOKIE.length + 1);
    } else if (pair) {
      kept.push(pair);
    }
  }
  return kept.join("; ");
}

function responseHeaders(raw: string[]): { headers: string[]; streaming: boolean } {
  const out: string[] = [];
  let length = false;
  let connection: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (RESPONSE_LENGTHS.has(name.length)) {
      const lower = name.toLowerCase();
      if (lower === "content-length") length = true;
      else if (DROP_RESPONSE.has(lower)) {
        if (lower === "connection") connection = raw[i + 1];
        continue;
      }
    }
    out.push(name, raw[i + 1]!);
  }
  const headers = connection === undefined ? out : dropConnectionListed(out, connection, false);
  return { headers, streaming: !length };
}

function bearer(authorization: string | undefined): string | undefined {
  if (authorization === undefined || authorization.length < 8) return undefined;
  if (authorization.slice(0, 7).toLowerCase() !== "bearer ") return undefined;
  return authorization.slice(7).trim() || undefined;
}

function unauthorizedBody(app: string): string {
  return `${JSON.stringify({
    code: "UNAUTHORIZED",
    message: `${app} requires a token: create one with \`caravan token create\`, then send "Authorization: Bearer <token>"`,
  })}\n`;
}

/** A redirect target from `next`: a local path only (one leading slash, no backslash tricks). */
function safeNext(next: string | null): string {
  if (!next || next[0] !== "/" || next[1] === "/" || next[1] === "\\") return "/";
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(next)) return "/";
  return next;
}

/** Writes a complete HTTP response on a raw (upgrade) socket and closes it. */
function rawReply(socket: Duplex, status: number, body: string, extra = ""): void {
  if (socket.destroyed) return;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n${extra}\r\n${body}`,
  );
}

/** One proxied request: from arrival to the end of the response to the client. */
class Exchange implements Pending {
  private replica?: ReplicaState;
  private upstream?: ClientRequest;
  private timer?: NodeJS.Timeout;
  private retried = false;
  private queued = false;
  /** The client connection closed (response sent or not). */
  private over = false;
  /** 0: waiting for the app's response; 1: relaying it; 2: answered by the gateway. */
  private state = 0;

  constructor(
    private readonly gateway: Gateway,
    private readonly route: Route,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly headers: string[],
    private readonly hasBody: boolean,
    private readonly start: number,
  ) {
    res.once("close", this.onClose);
  }

  enqueue(): void {
    this.queued = true;
    this.route.queue.push(this);
    this.gateway.wakeUp(this.route);
  }

  dispatch(replica: ReplicaState): void {
    this.queued = false;
    const ms = this.route.options.requestTimeoutMs;
    if (ms > 0) this.timer = setTimeout(this.onTimeout, ms);
    this.send(replica);
  }

  private send(replica: ReplicaState): void {
    this.replica = replica;
    this.route.acquire(replica);
    const up = request({
      host: HOST,
      port: replica.port,
      method: this.req.method,
      path: this.req.url,
      headers: this.headers,
      agent: replica.agent,
    });
    this.upstream = up;
    up.on("response", this.onResponse);
    up.on("error", this.onError);
    if (this.hasBody) this.req.pipe(up);
    else up.end();
  }

  private readonly onResponse = (pres: IncomingMessage): void => {
    clearTimeout(this.timer);
    if (this.over || this.state !== 0) {
      pres.destroy();
      return;
    }
    this.state = 1;
    const res = this.res;
    const { headers, streaming } = responseHeaders(pres.rawHeaders);
    res.writeHead(pres.statusCode!, pres.statusMessage, headers);
    // No Content-Length (SSE, chunked streams): the client gets the headers now, not with
    // the first chunk, which may come much later.
    if (streaming) res.flushHeaders();
    pres.on("close", () => {
      if (!pres.complete) res.destroy();
    });
    pres.pipe(res);
  };

  private readonly onError = (err: NodeJS.ErrnoException): void => {
    if (this.over || this.state === 2) return;
    if (this.state === 1) {
      this.res.destroy();
      return;
    }
    const failed = this.replica!;
    // Retry once, only when nothing reached the app: a refused connection (the replica died
    // since it was picked) goes to another replica; a reset on a reused keep-alive
    // connection (the app closed it as we sent) may go to any.
    if (!this.retried && !this.hasBody && idempotent(this.req.method)) {
      const refused = err.code === "ECONNREFUSED";
      if (refused || (err.code === "ECONNRESET" && this.upstream!.reusedSocket)) {
        const next = this.route.pick(refused ? failed : undefined);
        if (next) {
          this.retried = true;
          this.route.release(failed);
          this.replica = undefined;
          this.send(next);
          return;
        }
      }
    }
    this.fail(502, `${this.route.app}: upstream failed (${err.code ?? err.message})`);
  };

  private readonly onTimeout = (): void => {
    if (this.over || this.state !== 0) return;
    this.upstream?.destroy();
    this.fail(
      504,
      `${this.route.app}: no response within ${this.route.options.requestTimeoutMs} ms`,
    );
  };

  fail(status: number, message: string): void {
    clearTimeout(this.timer);
    const res = this.res;
    if (this.over || res.headersSent) {
      res.destroy();
      return;
    }
    this.state = 2;
    const body = `${message}\n`;
    res.writeHead(status, {
      "content-type": "text/plain; charset=utf-8",
      "content-length": Buffer.byteLength(body),
    });
    res.end(body);
  }

  private readonly onClose = (): void => {
    this.over = true;
    clearTimeout(this.timer);
    const route = this.route;
    if (this.queued) route.dequeue(this);
    const res = this.res;
    // The client went away before the whole response: stop the app's work too.
    if (!res.writableFinished) this.upstream?.destroy();
    if (this.replica) route.release(this.replica);
    route.record(res.headersSent ? res.statusCode : 499, performance.now() - this.start);
  };
}

/** An upgrade (WebSocket) request: raw sockets piped both ways once connected to a replica. */
class Tunnel implements Pending {
  private replica?: ReplicaState;
  private upstream?: Socket;
  private retried = false;
  private queued = false;
  private status = 0;

  constructor(
    private readonly gateway: Gateway,
    private readonly route: Route,
    private readonly socket: Socket,
    private readonly head: string,
    private readonly body: Buffer,
  ) {
    socket.on("error", noop);
    socket.once("close", this.onClose);
  }

  enqueue(): void {
    this.queued = true;
    this.route.queue.push(this);
    this.gateway.wakeUp(this.route);
  }

  dispatch(replica: ReplicaState): void {
    this.queued = false;
    this.replica = replica;
    this.route.acquire(replica);
    replica.upgrades.add(this.socket);
    const up = connect({ host: HOST, port: replica.port, noDelay: true });
    this.upstream = up;
    let connected = false;
    up.on("connect", () => {
      connected = true;
      up.write(this.head);
      if (this.body.length > 0) up.write(this.body);
      // The status of the app's answer (101 or a refusal), for the stats.
      up.once("data", (chunk: Buffer) => {
        this.status = Number(chunk.subarray(9, 12).toString("latin1")) || 0;
      });
      up.pipe(this.socket);
      this.socket.pipe(up);
    });
    up.on("error", (err: NodeJS.ErrnoException) => {
      if (connected) this.socket.destroy();
      else this.connectFailed(replica, err);
    });
    up.on("close", () => {
      if (this.upstream === up && !this.socket.destroyed) this.socket.destroySoon();
    });
  }

  private connectFailed(replica: ReplicaState, err: NodeJS.ErrnoException): void {
    this.upstream = undefined;
    this.route.release(replica);
    replica.upgrades.delete(this.socket);
    this.replica = undefined;
    if (!this.retried && err.code === "ECONNREFUSED") {
      const next = this.route.pick(replica);
      if (next) {
        this.retried = true;
        this.dispatch(next);
        return;
      }
    }
    this.fail(502, `${this.route.app}: upstream failed (${err.code ?? err.message})`);
  }

  fail(status: number, message: string): void {
    this.status = status;
    rawReply(this.socket, status, `${message}\n`);
  }

  private readonly onClose = (): void => {
    if (this.queued) this.route.dequeue(this);
    this.upstream?.destroy();
    if (this.replica) {
      this.replica.upgrades.delete(this.socket);
      this.route.release(this.replica);
    }
    // Long-lived by nature: counted, but kept out of the latency histogram.
    this.route.record(this.status || 499, -1);
  };
}

function idempotent(method: string | undefined): boolean {
  return method === "GET" || method === "HEAD" || method === "OPTIONS" || method === "DELETE";
}

export class Gateway {
  private readonly routes = new Map<string, Route>();

  constructor(private readonly hooks: GatewayHooks) {}

  /** Listens on the app's public and internal ports (127.0.0.1 both). Idempotent for the same ports; update options otherwise. */
  async open(
    app: string,
    ports: { public: number; internal: number },
    options: RouteOptions,
  ): Promise<void> {
    let route = this.routes.get(app);
    if (route) {
      route.options = { ...options };
      const same =
        route.requested.public === ports.public && route.requested.internal === ports.internal;
      if (same) return route.opening;
      // New ports: the replicas, the queue and the stats stay; the listeners move.
      await route.opening?.catch(noop);
      route.requested = { ...ports };
      await closeServers(route.servers);
      route.servers = [];
    } else {
      route = new Route(app, ports, options);
      this.routes.set(app, route);
    }
    const r = route;
    r.opening = (async () => {
      const pub = this.server(r, true);
      const internal = this.server(r, false);
      r.servers = [pub, internal];
      try {
        const [p, i] = await Promise.all([
          listen(pub, ports.public),
          listen(internal, ports.internal),
        ]);
        r.ports = { public: p, internal: i };
      } catch (err) {
        await closeServers(r.servers);
        r.servers = [];
        if (this.routes.get(app) === r) this.routes.delete(app);
        r.closed = true;
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
      if (old.port === replica.port) return;
      // Same id, new port: the old process gets no new requests, finishes what it has.
      void this.retire(route, old, Infinity);
    }
    route.ready.push(new ReplicaState(replica.id, replica.port));
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
        replica.agent.destroy();
        for (const s of replica.upgrades) s.destroy();
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
    const h = route.latency;
    return {
      requests: route.requests,
      errors: route.errors,
      latency: { p50: h.quantile(0.5), p99: h.quantile(0.99), count: h.count },
    };
  }

  /** Prometheus text exposition: per app request counter (by status class), latency histogram, in-flight gauge, replicas gauge. */
  metrics(): string {
    const routes = [...this.routes.values()];
    const lines: string[] = [];
    const family = (
      name: string,
      type: string,
      help: string,
      each: (r: Route, app: string) => void,
    ) => {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const r of routes) each(r, `app="${escapeLabel(r.app)}"`);
    };
    family(
      "caravan_gateway_requests_total",
      "counter",
      "Requests answered, by status class (499: the client went away first).",
      (r, app) => {
        for (let c = 1; c <= 5; c++) {
          lines.push(`caravan_gateway_requests_total{${app},code="${c}xx"} ${r.classes[c]}`);
        }
      },
    );
    family(
      "caravan_gateway_request_duration_seconds",
      "histogram",
      "Whole exchanges, from arrival to the last byte sent (upgrades excluded).",
      (r, app) => {
        let cumulative = 0;
        PROM_BOUNDS.forEach((le, i) => {
          cumulative += r.latency.prom[i]!;
          lines.push(
            `caravan_gateway_request_duration_seconds_bucket{${app},le="${le}"} ${cumulative}`,
          );
        });
        lines.push(
          `caravan_gateway_request_duration_seconds_bucket{${app},le="+Inf"} ${r.latency.count}`,
          `caravan_gateway_request_duration_seconds_sum{${app}} ${r.latency.sumSeconds}`,
          `caravan_gateway_request_duration_seconds_count{${app}} ${r.latency.count}`,
        );
      },
    );
    family("caravan_gateway_in_flight", "gauge", "Requests in flight on a replica.", (r, app) =>
      lines.push(`caravan_gateway_in_flight{${app}} ${r.inFlight}`),
    );
    family("caravan_gateway_waiting", "gauge", "Requests waiting for a replica.", (r, app) =>
      lines.push(`caravan_gateway_waiting{${app}} ${r.queue.length}`),
    );
    family("caravan_gateway_replicas", "gauge", "Replicas taking requests.", (r, app) =>
      lines.push(`caravan_gateway_replicas{${app}} ${r.ready.length}`),
    );
    return `${lines.join("\n")}\n`;
  }

  /** Stops listening for this app (drains nothing): its connections and waiting requests are cut. */
  async close(app: string): Promise<void> {
    const route = this.routes.get(app);
    if (!route) return;
    this.routes.delete(app);
    route.closed = true;
    await route.opening?.catch(noop);
    route.failQueue(503, `${app}: the gateway closed`);
    const replicas = [...route.ready, ...route.drainingSet];
    route.ready = [];
    await closeServers(route.servers);
    route.servers = [];
    for (const r of replicas) {
      r.agent.destroy();
      for (const s of r.upgrades) s.destroy();
      r.onIdle?.();
    }
  }

  async closeAll(): Promise<void> {
    await Promise.all([...this.routes.keys()].map((app) => this.close(app)));
  }

  /** Starts the app (once for all waiting requests) through the wake hook. */
  wakeUp(route: Route): void {
    if (route.waking) return;
    const wake = this.hooks.wake;
    if (!wake) {
      route.failQueue(503, `${route.app}: no replica is ready`);
      return;
    }
    route.waking = true;
    let woken: Promise<void>;
    try {
      woken = wake(route.app);
    } catch (err) {
      woken = Promise.reject(err);
    }
    woken.then(
      () => {
        route.waking = false;
        if (route.ready.length === 0) route.failQueue(503, `${route.app}: no replica is ready`);
      },
      (err: unknown) => {
        route.waking = false;
        const why = err instanceof Error ? err.message : String(err);
        route.failQueue(503, `${route.app}: could not start: ${why.split("\n")[0]}`);
      },
    );
  }

  private server(route: Route, pub: boolean): Server {
    // requestTimeout 0: uploads may stream for as long as they need (headersTimeout stays).
    const server = createServer({ requestTimeout: 0 }, (req, res) =>
      this.onRequest(route, req, res, pub),
    );
    server.on("upgrade", (req: IncomingMessage, socket: Socket, head: Buffer) =>
      this.onUpgrade(route, req, socket, head, pub),
    );
    return server;
  }

  private authorized(pub: boolean, route: Route): boolean {
    if (!pub || !route.options.requiresAuth) return true;
    try {
      const token = bearer(scan.authorization);
      if (token !== undefined && this.hooks.authorize(token)) return true;
      return scan.session !== undefined && this.hooks.authorize(scan.session);
    } catch {
      return false;
    }
  }

  private onRequest(route: Route, req: IncomingMessage, res: ServerResponse, pub: boolean): void {
    const start = performance.now();
    const url = req.url!;
    if (
      pub &&
      url.startsWith(LOGIN_PATH) &&
      (url.length === LOGIN_PATH.length || url[LOGIN_PATH.length] === "?")
    ) {
      this.login(route, req, res, start);
      return;
    }
    const headers = forwardHeaders(req, false, route.ports.internal);
    if (!this.authorized(pub, route)) {
      const body = unauthorizedBody(route.app);
      res.writeHead(401, {
        "content-type": "application/json; charset=utf-8",
        "content-length": Buffer.byteLength(body),
        "www-authenticate": `Bearer realm="caravan"`,
      });
      res.end(body);
      res.once("close", () => route.record(401, performance.now() - start));
      return;
    }
    const ex = new Exchange(this, route, req, res, headers, scan.hasBody, start);
    const replica = route.pick();
    if (replica) ex.dispatch(replica);
    else ex.enqueue();
  }

  private login(route: Route, req: IncomingMessage, res: ServerResponse, start: number): void {
    const query = new URL(req.url!, "http://gateway").searchParams;
    const code = query.get("code");
    let session: string | undefined;
    try {
      session = code && req.method === "GET" ? this.hooks.redeem?.(code) : undefined;
    } catch {
      session = undefined;
    }
    if (session === undefined) {
      const body = `${JSON.stringify({
        code: "UNAUTHORIZED",
        message: `this login link is invalid, used or expired: create a new one (\`caravan token create\` gives a token for "Authorization: Bearer <token>")`,
      })}\n`;
      res.writeHead(401, {
        "content-type": "application/json; charset=utf-8",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
    } else {
      res.writeHead(302, {
        location: safeNext(query.get("next")),
        "set-cookie": `${SESSION_COOKIE}=${session}; HttpOnly; SameSite=Lax; Path=/`,
        "cache-control": "no-store",
        "content-length": 0,
      });
      res.end();
    }
    res.once("close", () => route.record(res.statusCode, performance.now() - start));
  }

  private onUpgrade(
    route: Route,
    req: IncomingMessage,
    socket: Socket,
    body: Buffer,
    pub: boolean,
  ): void {
    const headers = forwardHeaders(req, true, route.ports.internal);
    if (!this.authorized(pub, route)) {
      socket.on("error", noop);
      rawReply(
        socket,
        401,
        unauthorizedBody(route.app),
        `WWW-Authenticate: Bearer realm="caravan"\r\n`,
      );
      route.record(401, -1);
      return;
    }
    let head = `${req.method} ${req.url} HTTP/1.1\r\n`;
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    const tunnel = new Tunnel(this, route, socket, `${head}\r\n`, body);
    const replica = route.pick();
    if (replica) tunnel.dispatch(replica);
    else tunnel.enqueue();
  }
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function listen(server: Server, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, HOST, () => {
      server.off("error", reject);
      resolve((server.address() as { port: number }).port);
    });
  });
}

function closeServers(servers: Server[]): Promise<void> {
  return Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          if (!s.listening) return resolve();
          s.close(() => resolve());
          s.closeAllConnections();
        }),
    ),
  ).then(noop);
}
