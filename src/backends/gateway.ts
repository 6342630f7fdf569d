/**
 * The gateway in front of every app: one public listener (authenticated when the app requires
 * it) and one internal listener (for app-to-app calls, never authenticated) per app, both on
 * loopback, forwarding to the app's replicas with least-outstanding-requests balancing.
 *
 * Built on node:http (the client side) and node:net (the app side) only. The hot path avoids
 * what it can: no header objects are built on either side (the request head is written from
 * the raw headers in one pass), each replica has its own pool of keep-alive connections read
 * by a small HTTP/1.1 response reader (destroying the pool cuts a drained replica), bodies
 * stream both ways and are never buffered.
 */
import { STATUS_CODES, createServer } from "node:http";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import { connect } from "node:net";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { performance } from "node:perf_hooks";

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
}

export interface RouteOptions {
  requiresAuth: boolean;
  /** Longest wait for the upstream response's headers, in ms; 0 = none. */
  requestTimeoutMs: number;
}

export interface GatewayHooks {
  /** Public side only: true when the bearer token or session cookie value is valid for `app`. */
  authorize(token: string, app: string): boolean;
  /** Redeems a one-time login code (from a link), returning a session value to set as a cookie, or undefined. */
  redeem?(code: string, app: string): string | undefined;
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

/**
 * The prefix of session cookies: each app's is `caravan_session_<its public port>`, since a
 * browser sends every cookie of 127.0.0.1 to every port there. None is ever forwarded to an app.
 */
export const SESSION_COOKIE = "caravan_session";
/** The session cookie of the app whose public listener is on `port`. */
export const sessionCookie = (port: number) => `${SESSION_COOKIE}_${port}`;
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
  readonly pool: Pool;
  inFlight = 0;
  draining = false;
  /** Upgraded (WebSocket) connections, cut when a drain's grace runs out. */
  readonly upgrades = new Set<Socket>();
  onIdle?: () => void;
  drained?: Promise<void>;

  constructor(
    readonly id: string,
    readonly port: number,
    readonly host: string,
  ) {
    this.pool = new Pool(host, port);
  }

  /** Cuts everything: pooled and active connections, upgraded sockets. */
  destroy(): void {
    this.pool.destroy();
    for (const s of this.upgrades) s.destroy();
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

// Request headers not forwarded (hop-by-hop, RFC 9110 §7.6.1). X-Forwarded-For is rebuilt.
// Content-Length and Transfer-Encoding are rewritten from what node's parser found.
const DROP_REQUEST = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "te",
  "trailer",
  "upgrade",
  "transfer-encoding",
  "content-length",
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
const REQUEST_LENGTHS = new Set(
  [
    ...DROP_REQUEST,
    "host",
    "cookie",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
  ].map((h) => h.length),
);
const RESPONSE_LENGTHS = new Set([...DROP_RESPONSE, "content-length"].map((h) => h.length));

/**
 * What one pass over a request's raw headers found. Reused across requests (everything on
 * the hot path is synchronous), so the scan allocates nothing but the head it returns.
 */
const scan = {
  authorization: undefined as string | undefined,
  /** More than one Authorization header: refused, never guessed at. */
  authorizations: 0,
  host: undefined as string | undefined,
  /** Set by the caller: the name of the route's session cookie (see `sessionCookie`). */
  sessionName: SESSION_COOKIE,
  session: undefined as string | undefined,
  /** The body's framing towards the app: none, a Content-Length, or chunked. */
  body: 0 as 0 | 1 | 2,
};
const BODY_NONE = 0;
const BODY_LENGTH = 1;
const BODY_CHUNKED = 2;

/**
 * The request head to send upstream (request line, headers, blank line); fills `scan`.
 * `upgrade` keeps Connection and Upgrade (they are the point of an upgrade request).
 * `edge`: the public listener, where the gateway is the first proxy: X-Forwarded-Proto and
 * -Host from the client are replaced, and so is its X-Forwarded-For (the client's address only);
 * on the internal one, a calling app's are kept (and the caller's address appended).
 * `listed`: header names the client's Connection header made hop-by-hop (a rare second pass).
 */
function requestHead(
  req: IncomingMessage,
  upgrade: boolean,
  port: number,
  edge: boolean,
  listed?: string[],
): string {
  const raw = req.rawHeaders;
  let head = `${req.method} ${req.url} HTTP/1.1\r\n`;
  let connection: string | undefined;
  let xff: string | undefined;
  let host: string | undefined;
  let proto = false;
  let fwdHost = false;
  let length: string | undefined;
  let chunked = false;
  scan.authorization = undefined;
  scan.authorizations = 0;
  scan.session = undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    let value = raw[i + 1]!;
    if (REQUEST_LENGTHS.has(name.length) || listed) {
      const lower = name.toLowerCase();
      if (listed?.includes(lower)) continue;
      switch (lower) {
        case "host":
          host = value;
          break;
        case "authorization":
          scan.authorization = value;
          scan.authorizations++;
          // A caravan token is for the gateway: the app never sees it (it opens every app).
          if (bearer(value)?.startsWith("cvn_")) continue;
          break;
        case "cookie":
          if (value.includes(SESSION_COOKIE)) {
            value = takeSession(value);
            if (!value) continue;
          }
          break;
        case "x-forwarded-for":
          if (edge) continue; // the gateway is the first proxy: a client's claim is not kept
          xff = xff === undefined ? value : `${xff}, ${value}`;
          continue;
        case "x-forwarded-proto":
          if (edge) continue;
          proto = true;
          break;
        case "x-forwarded-host":
          if (edge) continue;
          fwdHost = true;
          break;
        case "content-length":
          length = value;
          continue;
        case "transfer-encoding":
          // Node's parser decoded the chunks; the body goes upstream chunked again.
          chunked = true;
          continue;
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
    }
    head += `${name}: ${value}\r\n`;
  }
  if (connection !== undefined && listed === undefined) {
    const tokens = hopTokens(connection, upgrade);
    if (tokens.length > 0) return requestHead(req, upgrade, port, edge, tokens);
  }
  scan.host = host;
  // An HTTP/1.0 client may send no Host; node servers reject an HTTP/1.1 request without one.
  if (host === undefined) head += `host: ${HOST}:${port}\r\n`;
  const client = req.socket.remoteAddress ?? "";
  head += `x-forwarded-for: ${xff === undefined ? client : `${xff}, ${client}`}\r\n`;
  if (!proto) head += "x-forwarded-proto: http\r\n";
  if (!fwdHost && host !== undefined) head += `x-forwarded-host: ${host}\r\n`;
  if (chunked) {
    scan.body = BODY_CHUNKED;
    head += "transfer-encoding: chunked\r\n";
  } else if (length !== undefined && length !== "0") {
    scan.body = BODY_LENGTH;
    head += `content-length: ${length}\r\n`;
  } else {
    scan.body = BODY_NONE;
    // Methods that usually carry a body say that this one is empty.
    if (length !== undefined) head += "content-length: 0\r\n";
  }
  return `${head}\r\n`;
}

/** Header names a Connection header lists (beyond close / keep-alive / upgrade). */
function hopTokens(connection: string, upgrade: boolean): string[] {
  return connection
    .toLowerCase()
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t && t !== "close" && t !== "keep-alive" && !(upgrade && t === "upgrade"));
}

/**
 * Removes every caravan session cookie from a Cookie header (an app never sees one, not even
 * another app's), noting the value of the route's own (`scan.sessionName`) in `scan`.
 */
function takeSession(cookie: string): string {
  const kept: string[] = [];
  const own = `${scan.sessionName}=`;
  for (const part of cookie.split(";")) {
    const pair = part.trim();
    if (pair.startsWith(own)) {
      scan.session ??= pair.slice(own.length);
    } else if (pair.startsWith(SESSION_COOKIE)) {
      continue;
    } else if (pair) {
      kept.push(pair);
    }
  }
  return kept.join("; ");
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

/**
 * Why a request is refused before anything else, from the `scan` of its head: two
 * Authorization headers (which one counts would be a guess), or — on an internal listener —
 * a Host that is not a loopback name with the listener's port (a browser page of another
 * site reaching it by DNS rebinding). Undefined when it may go on.
 */
function refusal(app: string, pub: boolean, port: number): [number, string] | undefined {
  if (scan.authorizations > 1)
    return [400, `more than one Authorization header in a request to ${app}: send exactly one`];
  if (pub || scan.host === undefined) return undefined;
  const host = scan.host.toLowerCase();
  if (host === `127.0.0.1:${port}` || host === `localhost:${port}` || host === `[::1]:${port}`)
    return undefined;
  return [
    421,
    `${app}'s internal endpoint answers only to Host 127.0.0.1:${port}, localhost:${port} or [::1]:${port}, not ${JSON.stringify(scan.host.slice(0, 200))}: call it at http://127.0.0.1:${port}, or use the app's public endpoint`,
  ];
}

function refusalBody(message: string): string {
  return `${JSON.stringify({ code: "REFUSED", message })}\n`;
}

/**
 * A redirect target from `next`: a local path only (one leading slash, not "//" nor "/\\",
 * which browsers take for another host), in printable ASCII (a valid Location value).
 */
function safeNext(next: string | null): string {
  return next && /^\/(?![/\\])[\x21-\x7e]*$/.test(next) ? next : "/";
}

/** Writes a complete HTTP response on a raw (upgrade) socket and closes it. */
function rawReply(socket: Duplex, status: number, body: string, extra = ""): void {
  if (socket.destroyed) return;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n${extra}\r\n${body}`,
  );
}

// ---------------------------------------------------------------------------------------------
// The upstream side: a keep-alive connection pool per replica and an HTTP/1.1 response reader.
// With node's http client (ClientRequest, Agent, IncomingMessage, pipe) instead, the gateway
// used 2.4 times the CPU per request (bench/RESULTS.md, "Gateway"). The apps behind it are
// caravan's own loopback processes; anything unexpected from them is answered 502.

const IDLE_MAX = 256;
/** Idle keep-alive connections are closed after this, or 1 s before the app's Keep-Alive hint. */
const IDLE_MS = 4000;
const MAX_HEAD = 64 * 1024;
const MAX_LINE = 8 * 1024;
const CRLFCRLF = Buffer.from("\r\n\r\n");

// Reader states.
const HEAD = 0;
const LENGTH = 1;
const CHUNK_SIZE = 2;
const CHUNK_DATA = 3;
const CHUNK_END = 4;
const TRAILERS = 5;
const UNTIL_CLOSE = 6;
const IDLE = 7;

class UpstreamError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/** What a connection reports to the exchange using it. */
interface ResponseSink {
  /** The response head; false when it cannot be relayed (the connection is then dropped). */
  onHead(status: number, message: string | undefined, headers: string[]): boolean;
  /** Body bytes; false asks the connection to pause until `resume`. */
  onBody(data: Buffer): boolean;
  /** The bytes received so far are relayed; more may take a while. */
  onPause(): void;
  /** The response is complete (`last`: its final bytes, if any). */
  onEnd(last: Buffer | undefined): void;
  /** The connection failed before the response was complete. */
  onFail(err: NodeJS.ErrnoException, retryable: boolean): void;
}

class Pool {
  private idle: Conn[] = [];
  private readonly active = new Set<Conn>();
  private closed = false;

  constructor(
    readonly host: string,
    readonly port: number,
  ) {}

  acquire(now: number): Conn {
    for (let c = this.idle.pop(); c !== undefined; c = this.idle.pop()) {
      if (c.idleUntil > now && !c.socket.destroyed) {
        this.active.add(c);
        return c;
      }
      c.socket.destroy();
    }
    const c = new Conn(this);
    this.active.add(c);
    return c;
  }

  release(c: Conn): void {
    this.active.delete(c);
    if (this.closed || this.idle.length >= IDLE_MAX || c.idleMs <= 0) {
      c.socket.destroy();
      return;
    }
    c.idleUntil = Date.now() + c.idleMs;
    this.idle.push(c);
  }

  forget(c: Conn): void {
    this.active.delete(c);
    const i = this.idle.indexOf(c);
    if (i >= 0) this.idle.splice(i, 1);
  }

  /** Closes idle connections past their time (the app would close them soon: a race). */
  sweep(now: number): void {
    if (this.idle.length === 0) return;
    const keep: Conn[] = [];
    for (const c of this.idle) {
      if (c.idleUntil > now) keep.push(c);
      else c.socket.destroy();
    }
    this.idle = keep;
  }

  destroy(): void {
    this.closed = true;
    for (const c of this.idle) c.socket.destroy();
    for (const c of this.active) c.socket.destroy();
    this.idle = [];
  }
}

/** One keep-alive connection to a replica, with its response reader (reused across requests). */
class Conn {
  readonly socket: Socket;
  sink: ResponseSink | undefined;
  /** Served a response before: a reset before any byte may be the keep-alive race. */
  reused = false;
  idleUntil = 0;
  idleMs = IDLE_MS;
  /** The request body is still being written: the connection cannot be reused before. */
  sending = false;
  private state = IDLE;
  private keepAlive = true;
  private headOnly = false;
  private partial: Buffer | undefined;
  private line = "";
  private remaining = 0;
  private received = false;
  private hintSeen = "";
  private hint = 0;

  constructor(private readonly pool: Pool) {
    const socket = connect({ host: pool.host, port: pool.port, noDelay: true });
    this.socket = socket;
    socket.on("data", (chunk: Buffer) => this.onData(chunk));
    socket.on("error", (err: NodeJS.ErrnoException) => this.fail(err));
    socket.on("close", () => this.onClose());
  }

  /** Starts an exchange: the caller writes the request; the response goes to `sink`. */
  start(sink: ResponseSink, headOnly: boolean): void {
    this.sink = sink;
    this.state = HEAD;
    this.headOnly = headOnly;
    this.keepAlive = true;
    this.received = false;
  }

  /** The exchange gave up on this connection (client gone, timeout). */
  abandon(): void {
    this.sink = undefined;
    this.socket.destroy();
  }

  private onData(chunk: Buffer): void {
    if (this.sink === undefined) {
      // Bytes nobody asked for: the connection is out of step.
      this.socket.destroy();
      return;
    }
    this.received = true;
    this.read(chunk);
    // A response still going on after these bytes: its head must not wait for more of them
    // (an SSE stream's next event may be minutes away).
    if (this.sink !== undefined && this.state !== HEAD) this.sink.onPause();
  }

  private read(chunk: Buffer): void {
    let i = 0;
    let n = chunk.length;
    while (i < n) {
      const sink: ResponseSink | undefined = this.sink;
      if (sink === undefined) {
        this.socket.destroy();
        return;
      }
      switch (this.state) {
        case HEAD: {
          if (this.partial !== undefined) {
            chunk = Buffer.concat([this.partial, chunk.subarray(i)]);
            this.partial = undefined;
            i = 0;
            n = chunk.length;
          }
          const end = chunk.indexOf(CRLFCRLF, i);
          if (end < 0) {
            if (n - i > MAX_HEAD) return this.protocolError("response head too large");
            this.partial = chunk.subarray(i);
            return;
          }
          const headStart = i;
          i = end + 4;
          if (!this.readHead(chunk.toString("latin1", headStart, end), sink)) return;
          // readHead moved the state on (the switch's narrowing does not know).
          if ((this.state as number) === IDLE) {
            this.finish(undefined, i < n);
            return;
          }
          break;
        }
        case LENGTH:
        case CHUNK_DATA: {
          const available = n - i;
          const take = available < this.remaining ? available : this.remaining;
          const data = take === n ? chunk : chunk.subarray(i, i + take);
          i += take;
          this.remaining -= take;
          if (this.remaining > 0 || this.state === CHUNK_DATA) {
            if (this.remaining === 0) this.state = CHUNK_END;
            if (!sink.onBody(data)) this.socket.pause();
          } else {
            this.finish(data, i < n);
            return;
          }
          break;
        }
        case CHUNK_SIZE:
        case CHUNK_END:
        case TRAILERS: {
          const nl = chunk.indexOf(10, i);
          if (nl < 0) {
            this.line += chunk.toString("latin1", i, n);
            if (this.line.length > MAX_LINE) return this.protocolError("chunk line too long");
            return;
          }
          const line = this.line + chunk.toString("latin1", i, nl);
          this.line = "";
          i = nl + 1;
          if (line.charCodeAt(line.length - 1) !== 13) return this.protocolError("bare LF");
          if (this.state === CHUNK_END) {
            if (line.length !== 1) return this.protocolError("chunk without CRLF");
            this.state = CHUNK_SIZE;
          } else if (this.state === CHUNK_SIZE) {
            const semi = line.indexOf(";");
            const hex = (semi < 0 ? line.slice(0, -1) : line.slice(0, semi)).trim();
            if (!/^[0-9a-fA-F]{1,8}$/.test(hex)) return this.protocolError("bad chunk size");
            this.remaining = parseInt(hex, 16);
            this.state = this.remaining === 0 ? TRAILERS : CHUNK_DATA;
          } else if (line.length === 1) {
            // The blank line after the last chunk (trailers, if any, are dropped).
            this.finish(undefined, i < n);
            return;
          }
          break;
        }
        case UNTIL_CLOSE: {
          if (!sink.onBody(i === 0 ? chunk : chunk.subarray(i))) this.socket.pause();
          return;
        }
        default:
          return this.protocolError("unexpected bytes");
      }
    }
  }

  /** Parses a response head; sets the body state. False when the connection was dropped. */
  private readHead(head: string, sink: ResponseSink): boolean {
    const end = head.length;
    let eol = head.indexOf("\r\n");
    if (eol < 0) eol = end;
    // "HTTP/1.x NNN[ reason]", checked by hand: this runs once per response.
    const minor = head.charCodeAt(7);
    const c1 = head.charCodeAt(9);
    const c2 = head.charCodeAt(10);
    const c3 = head.charCodeAt(11);
    if (
      !head.startsWith("HTTP/1.") ||
      (minor !== 48 && minor !== 49) ||
      head.charCodeAt(8) !== 32 ||
      !(c1 >= 49 && c1 <= 57 && c2 >= 48 && c2 <= 57 && c3 >= 48 && c3 <= 57) ||
      (eol > 12 && head.charCodeAt(12) !== 32)
    ) {
      this.protocolError("malformed status line");
      return false;
    }
    const status = (c1 - 48) * 100 + (c2 - 48) * 10 + (c3 - 48);
    const message = eol > 13 ? head.slice(13, eol) : undefined;
    const headers: string[] = [];
    let length = -1;
    let te: string | undefined;
    let connection: string | undefined;
    let hint = 0;
    for (let pos = eol + 2; pos < end; pos = eol + 2) {
      eol = head.indexOf("\r\n", pos);
      if (eol < 0) eol = end;
      const colon = head.indexOf(":", pos);
      const last = head.charCodeAt(colon - 1);
      if (colon <= pos || colon > eol || last === 32 || last === 9 || head.charCodeAt(pos) <= 32) {
        this.protocolError("malformed header line");
        return false;
      }
      const name = head.slice(pos, colon);
      const value = head.slice(colon + 1, eol).trim();
      if (RESPONSE_LENGTHS.has(name.length)) {
        const lower = name.toLowerCase();
        if (lower === "content-length") {
          const v = /^\d{1,15}$/.test(value) ? Number(value) : NaN;
          if (Number.isNaN(v) || (length >= 0 && v !== length)) {
            this.protocolError("bad Content-Length");
            return false;
          }
          length = v;
        } else if (DROP_RESPONSE.has(lower)) {
          if (lower === "transfer-encoding") te = te === undefined ? value : `${te}, ${value}`;
          else if (lower === "connection") {
            connection = connection === undefined ? value : `${connection}, ${value}`;
          } else if (lower === "keep-alive") {
            // The same value every time from a given app: parsed once.
            if (value !== this.hintSeen) {
              this.hintSeen = value;
              this.hint = Number(/timeout=(\d+)/i.exec(value)?.[1] ?? 0);
            }
            hint = this.hint;
          }
          continue;
        }
      }
      headers.push(name, value);
    }
    if (status < 200) {
      // 100 Continue, 103 Early Hints: interim, the final response follows. A 101 here
      // (this is no upgrade) makes the connection unusable.
      if (status === 101) {
        this.protocolError("unexpected 101");
        return false;
      }
      this.state = HEAD;
      return true;
    }
    const conn = connection?.toLowerCase();
    this.keepAlive = minor === 49 ? !conn?.includes("close") : !!conn?.includes("keep-alive");
    if (hint > 0) this.idleMs = Math.min(IDLE_MS, hint * 1000 - 1000);
    let hop = headers;
    if (conn !== undefined && conn !== "keep-alive" && conn !== "close") {
      const listed = hopTokens(conn, false);
      if (listed.length > 0) {
        hop = [];
        for (let k = 0; k < headers.length; k += 2) {
          if (!listed.includes(headers[k]!.toLowerCase())) hop.push(headers[k]!, headers[k + 1]!);
        }
      }
    }
    if (this.headOnly || status === 204 || status === 304) {
      this.state = IDLE;
    } else if (te !== undefined) {
      if (length >= 0) {
        this.protocolError("both Content-Length and Transfer-Encoding");
        return false;
      }
      if (/(^|,)\s*chunked\s*$/i.test(te)) this.state = CHUNK_SIZE;
      else {
        this.state = UNTIL_CLOSE;
        this.keepAlive = false;
      }
    } else if (length >= 0) {
      this.remaining = length;
      this.state = length === 0 ? IDLE : LENGTH;
    } else {
      this.state = UNTIL_CLOSE;
      this.keepAlive = false;
    }
    if (!sink.onHead(status, message, hop)) {
      this.abandon();
      return false;
    }
    return true;
  }

  /** The response is complete: hand back the connection (or drop it) and tell the exchange. */
  private finish(last: Buffer | undefined, leftover: boolean): void {
    const sink = this.sink!;
    this.sink = undefined;
    this.state = IDLE;
    this.reused = true;
    if (this.keepAlive && !leftover && !this.sending) this.pool.release(this);
    else {
      this.pool.forget(this);
      this.socket.destroy();
    }
    sink.onEnd(last);
  }

  /** The request body is fully written (until then, a finished response drops the connection). */
  sent(): void {
    this.sending = false;
  }

  private protocolError(why: string): void {
    this.fail(new UpstreamError(`invalid response: ${why}`, "EPROTO"));
    this.socket.destroy();
  }

  private fail(err: NodeJS.ErrnoException): void {
    const sink = this.sink;
    this.sink = undefined;
    this.state = IDLE;
    this.pool.forget(this);
    sink?.onFail(err, !this.received);
  }

  private onClose(): void {
    if (this.sink !== undefined && this.state === UNTIL_CLOSE) {
      const sink = this.sink;
      this.sink = undefined;
      this.pool.forget(this);
      sink.onEnd(undefined);
      return;
    }
    this.fail(new UpstreamError("the app closed the connection", "ECONNRESET"));
  }
}

// The exchange's event handlers are shared functions finding their exchange on the response
// (no closures, nor bound methods, allocated per request).
const EXCHANGE = Symbol("caravan.exchange");
type Carrier = ServerResponse & { [EXCHANGE]?: Exchange };
function onResponseClose(this: Carrier): void {
  this[EXCHANGE]!.closed();
}
function onResponseDrain(this: Carrier): void {
  this[EXCHANGE]!.resume();
}
function onExchangeTimeout(ex: Exchange): void {
  ex.timedOut();
}

/** One proxied request: from arrival to the end of the response to the client. */
class Exchange implements Pending, ResponseSink {
  private replica?: ReplicaState;
  private conn?: Conn;
  private timer?: NodeJS.Timeout;
  private retried = false;
  private queued = false;
  /** The client connection closed (response sent or not). */
  private over = false;
  /** 0: waiting for the app's response; 1: relaying it; 2: answered by the gateway. */
  private state = 0;
  private paused = false;

  constructor(
    private readonly gateway: Gateway,
    private readonly route: Route,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    private readonly head: string,
    private readonly body: 0 | 1 | 2,
    private readonly start: number,
  ) {
    (res as Carrier)[EXCHANGE] = this;
    res.once("close", onResponseClose);
  }

  enqueue(): void {
    this.queued = true;
    this.route.queue.push(this);
    this.gateway.wakeUp(this.route);
  }

  dispatch(replica: ReplicaState): void {
    this.queued = false;
    const ms = this.route.options.requestTimeoutMs;
    if (ms > 0) this.timer = setTimeout(onExchangeTimeout, ms, this);
    this.send(replica);
  }

  private send(replica: ReplicaState): void {
    this.replica = replica;
    this.route.acquire(replica);
    const conn = replica.pool.acquire(Date.now());
    this.conn = conn;
    conn.start(this, this.req.method === "HEAD");
    const socket = conn.socket;
    socket.write(this.head, "latin1");
    if (this.body !== BODY_NONE) this.sendBody(conn);
  }

  /** Streams the request body upstream (chunked again when the client sent it chunked). */
  private sendBody(conn: Conn): void {
    const req = this.req;
    const socket = conn.socket;
    const chunked = this.body === BODY_CHUNKED;
    conn.sending = true;
    const onData = (data: Buffer) => {
      if (socket.destroyed) return;
      let ok: boolean;
      if (chunked) {
        // One writev for the chunk and its framing.
        socket.cork();
        socket.write(`${data.length.toString(16)}\r\n`, "latin1");
        socket.write(data);
        ok = socket.write("\r\n", "latin1");
        socket.uncork();
      } else {
        ok = socket.write(data);
      }
      if (!ok) {
        req.pause();
        socket.once("drain", () => req.resume());
      }
    };
    req.on("data", onData);
    req.once("end", () => {
      if (chunked && !socket.destroyed) socket.write("0\r\n\r\n", "latin1");
      conn.sent();
    });
  }

  onHead(status: number, message: string | undefined, headers: string[]): boolean {
    clearTimeout(this.timer);
    if (this.over || this.state !== 0) return false;
    this.state = 1;
    try {
      this.res.writeHead(status, message, headers);
    } catch {
      // A header node refuses to send (an invalid character): nothing was written yet.
      this.state = 0;
      this.fail(502, `${this.route.app}: the app sent an invalid response header`);
      return false;
    }
    return true;
  }

  /** Headers go out with the first body bytes, or now if there are none yet (SSE). */
  onPause(): void {
    if (!this.over && !this.res.headersSent) this.res.flushHeaders();
  }

  onBody(data: Buffer): boolean {
    if (this.over) return true;
    if (this.res.write(data)) return true;
    if (!this.paused) {
      this.paused = true;
      this.res.once("drain", onResponseDrain);
    }
    return false;
  }

  resume(): void {
    this.paused = false;
    this.conn?.socket.resume();
  }

  onEnd(last: Buffer | undefined): void {
    if (this.over) return;
    this.res.end(last);
  }

  onFail(err: NodeJS.ErrnoException, retryable: boolean): void {
    if (this.over || this.state === 2) return;
    if (this.state === 1) {
      this.res.destroy();
      return;
    }
    const failed = this.replica!;
    // Retry once, only when nothing reached the app: a refused connection (the replica died
    // since it was picked) goes to another replica; a reset on a reused keep-alive
    // connection (the app closed it as we sent) may go to any.
    if (!this.retried && retryable && this.body === BODY_NONE && idempotent(this.req.method)) {
      const refused = err.code === "ECONNREFUSED";
      if (refused || (err.code === "ECONNRESET" && this.conn!.reused)) {
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
  }

  timedOut(): void {
    if (this.over || this.state !== 0) return;
    if (this.conn?.sink === this) this.conn.abandon();
    this.fail(
      504,
      `${this.route.app}: no response within ${this.route.options.requestTimeoutMs} ms`,
    );
  }

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

  closed(): void {
    this.over = true;
    clearTimeout(this.timer);
    const route = this.route;
    if (this.queued) route.dequeue(this);
    const res = this.res;
    // The client went away before the whole response: stop the app's work too.
    if (!res.writableFinished && this.conn?.sink === this) this.conn.abandon();
    if (this.replica) route.release(this.replica);
    route.record(res.headersSent ? res.statusCode : 499, performance.now() - this.start);
  }
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
    const up = connect({ host: replica.host, port: replica.port, noDelay: true });
    this.upstream = up;
    let connected = false;
    up.on("connect", () => {
      connected = true;
      up.write(this.head, "latin1");
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
      // Idle upstream connections past their keep-alive time are closed once a second.
      this.sweeper ??= setInterval(() => this.sweep(), 1000).unref();
    }
    const r = route;
    r.opening = (async () => {
      const pub = this.server(r, true);
      const internal = this.server(r, false);
      r.servers = [pub, internal];
      try {
        const [p, i] = await Promise.all([
          listen(pub, ports.public, this.options.publicHost ?? HOST),
          listen(internal, ports.internal, HOST),
        ]);
        r.ports = { public: p, internal: i };
      } catch (err) {
        await closeServers(r.servers);
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
    this.forget(route);
    await route.opening?.catch(noop);
    route.failQueue(503, `${app}: the gateway closed`);
    const replicas = [...route.ready, ...route.drainingSet];
    route.ready = [];
    await closeServers(route.servers);
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
    const server = createServer({ requestTimeout: 0 }, (req, res) => {
      try {
        this.onRequest(route, req, res, pub);
      } catch (err) {
        // A bug here must cost one request, not the control plane that hosts the gateway.
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
    return server;
  }

  private authorized(pub: boolean, route: Route): boolean {
    if (!pub || !route.options.requiresAuth) return true;
    try {
      const token = bearer(scan.authorization);
      if (token !== undefined && this.hooks.authorize(token, route.app)) return true;
      return scan.session !== undefined && this.hooks.authorize(scan.session, route.app);
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
    scan.sessionName = sessionCookie(route.ports.public);
    const head = requestHead(req, false, route.ports.internal, pub);
    const refused = refusal(route.app, pub, pub ? route.ports.public : route.ports.internal);
    if (refused) {
      const body = refusalBody(refused[1]);
      res.writeHead(refused[0], {
        "content-type": "application/json; charset=utf-8",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
      res.once("close", () => route.record(refused[0], performance.now() - start));
      return;
    }
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
    const ex = new Exchange(this, route, req, res, head, scan.body, start);
    const replica = route.pick();
    if (replica) ex.dispatch(replica);
    else ex.enqueue();
  }

  private login(route: Route, req: IncomingMessage, res: ServerResponse, start: number): void {
    const query = new URL(req.url!, "http://gateway").searchParams;
    const code = query.get("code");
    let session: string | undefined;
    try {
      session = code && req.method === "GET" ? this.hooks.redeem?.(code, route.app) : undefined;
    } catch {
      session = undefined;
    }
    if (session === undefined) {
      const body = `${JSON.stringify({
        code: "UNAUTHORIZED",
        message: `this login link is invalid, used or expired: make a new one with \`caravan token link <app>\` (or send "Authorization: Bearer <token>" with a token from \`caravan token create\`)`,
      })}\n`;
      res.writeHead(401, {
        "content-type": "application/json; charset=utf-8",
        "content-length": Buffer.byteLength(body),
      });
      res.end(body);
    } else {
      res.writeHead(302, {
        location: safeNext(query.get("next")),
        "set-cookie": `${sessionCookie(route.ports.public)}=${session}; HttpOnly; SameSite=Lax; Path=/`,
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
    scan.sessionName = sessionCookie(route.ports.public);
    const head = requestHead(req, true, route.ports.internal, pub);
    const refused = refusal(route.app, pub, pub ? route.ports.public : route.ports.internal);
    if (refused) {
      socket.on("error", noop);
      rawReply(socket, refused[0], refusalBody(refused[1]));
      route.record(refused[0], -1);
      return;
    }
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
    const tunnel = new Tunnel(this, route, socket, head, body);
    const replica = route.pick();
    if (replica) tunnel.dispatch(replica);
    else tunnel.enqueue();
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

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
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
