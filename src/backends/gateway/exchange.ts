/**
 * One proxied request, from its arrival to the end of the response to the client: picks up
 * a pooled connection to the replica, writes the head and streams the body, relays the
 * response as the reader delivers it, retries once when nothing reached the app, times out.
 * The client side is node's ServerResponse (`NodeClient`) or a connection the gateway reads
 * itself (`client-connection.ts`, for requests without a body).
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import { BODY_CHUNKED, BODY_NONE, type BodyFraming, type RequestHead } from "./request-head.ts";
import type { ResponseSink } from "./response-reader.ts";
import type { Pending, ReplicaState, Route } from "./route.ts";
import { hopSpan, type HopTrace } from "./trace.ts";
import type { Conn } from "./upstream.ts";

/** Where an exchange's response goes. */
export interface ClientSide {
  /** From now on, tell `ex` when the response is over (`closed`: sent, or the client gone). */
  watch(ex: Exchange): void;
  /** A head was given (`head` or `reply`): the status is decided. */
  readonly headersSent: boolean;
  /** The whole response went out. */
  readonly finished: boolean;
  readonly statusCode: number;
  /** The response head; throws when a header cannot be sent (an invalid character). */
  head(status: number, message: string | undefined, headers: string[]): void;
  /** Sends the head now, without waiting for body bytes (an SSE stream's may take minutes). */
  flush(): void;
  /** False: full; `ex.resume()` is called once the client took the bytes. */
  write(data: Buffer): boolean;
  end(last: Buffer | undefined): void;
  /** The gateway's own answer: a complete plain-text response. */
  reply(status: number, body: string): void;
  /** Cuts the client connection (a response that cannot be completed). */
  destroy(): void;
}

// Node's events find their exchange on the response: shared functions, no closures nor
// bound methods allocated per request.
const EXCHANGE = Symbol("caravan.exchange");
const DRAINING = Symbol("caravan.draining");
type Carrier = ServerResponse & { [EXCHANGE]?: Exchange; [DRAINING]?: boolean };
function onResponseClose(this: Carrier): void {
  this[EXCHANGE]!.closed();
}
function onResponseDrain(this: Carrier): void {
  this[DRAINING] = false;
  this[EXCHANGE]!.resume();
}
function onExchangeTimeout(ex: Exchange): void {
  ex.timedOut();
}

/** The client side through node's http server (requests with a body, odd ones). */
export class NodeClient implements ClientSide {
  constructor(private readonly res: Carrier) {}

  watch(ex: Exchange): void {
    this.res[EXCHANGE] = ex;
    this.res.once("close", onResponseClose);
  }

  get headersSent(): boolean {
    return this.res.headersSent;
  }

  get finished(): boolean {
    return this.res.writableFinished;
  }

  get statusCode(): number {
    return this.res.statusCode;
  }

  head(status: number, message: string | undefined, headers: string[]): void {
    this.res.writeHead(status, message, headers);
  }

  flush(): void {
    this.res.flushHeaders();
  }

  write(data: Buffer): boolean {
    if (this.res.write(data)) return true;
    if (!this.res[DRAINING]) {
      this.res[DRAINING] = true;
      this.res.once("drain", onResponseDrain);
    }
    return false;
  }

  end(last: Buffer | undefined): void {
    this.res.end(last);
  }

  reply(status: number, body: string): void {
    this.res.writeHead(status, {
      "content-type": "text/plain; charset=utf-8",
      "content-length": Buffer.byteLength(body),
    });
    this.res.end(body);
  }

  destroy(): void {
    this.res.destroy();
  }
}

export class Exchange implements Pending, ResponseSink {
  private replica?: ReplicaState;
  private conn?: Conn;
  private timer?: NodeJS.Timeout;
  private retried = false;
  private queued = false;
  /** The client connection closed (response sent or not). */
  private over = false;
  /** 0: waiting for the app's response; 1: relaying it; 2: answered by the gateway. */
  private state = 0;
  private readonly head: string;
  private readonly body: BodyFraming;
  /** The gateway's span, when the request is traced; its outcome below. */
  private readonly trace: HopTrace | undefined;
  /** When it was queued for a replica (0: it was not), and for how long. */
  private queuedAt = 0;
  private waitedMs: number | undefined;
  private failure: string | undefined;

  /**
   * `head`: what goes upstream; `pub`: it came in on the public listener; `req`: the client's
   * request as node read it, for its body (none: no body).
   */
  constructor(
    private readonly route: Route,
    private readonly method: string,
    private readonly res: ClientSide,
    head: RequestHead,
    private readonly pub: boolean,
    private readonly start: number,
    private readonly req?: IncomingMessage,
  ) {
    this.head = head.text;
    this.body = head.body;
    this.trace = head.trace;
    res.watch(this);
  }

  enqueue(): void {
    this.queued = true;
    this.queuedAt = performance.now();
    this.route.enqueue(this);
  }

  dispatch(replica: ReplicaState): void {
    this.queued = false;
    if (this.queuedAt !== 0) this.waitedMs = performance.now() - this.queuedAt;
    const ms = this.route.options.requestTimeoutMs;
    if (ms > 0) this.timer = setTimeout(onExchangeTimeout, ms, this);
    this.send(replica);
  }

  private send(replica: ReplicaState): void {
    this.replica = replica;
    this.route.acquire(replica);
    const conn = replica.pool.acquire(Date.now());
    this.conn = conn;
    conn.start(this, this.method === "HEAD");
    const socket = conn.socket;
    socket.write(this.head, "latin1");
    if (this.body !== BODY_NONE) this.sendBody(conn);
  }

  /** Streams the request body upstream (chunked again when the client sent it chunked). */
  private sendBody(conn: Conn): void {
    const req = this.req!;
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
      this.res.head(status, message, headers);
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
    if (!this.over && !this.res.headersSent) this.res.flush();
  }

  onBody(data: Buffer): boolean {
    if (this.over) return true;
    return this.res.write(data);
  }

  resume(): void {
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
    if (!this.retried && retryable && this.body === BODY_NONE && idempotent(this.method)) {
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
    this.failure = message;
    const res = this.res;
    if (this.over || res.headersSent) {
      res.destroy();
      return;
    }
    this.state = 2;
    res.reply(status, `${message}\n`);
  }

  closed(): void {
    this.over = true;
    clearTimeout(this.timer);
    const route = this.route;
    if (this.queued) route.dequeue(this);
    const res = this.res;
    // The client went away before the whole response: stop the app's work too.
    if (!res.finished && this.conn?.sink === this) this.conn.abandon();
    if (this.replica) route.release(this.replica);
    const end = performance.now();
    const status = res.headersSent ? res.statusCode : 499;
    route.traffic.record(status, end - this.start);
    if (this.trace !== undefined) this.recordSpan(status, end);
  }

  private recordSpan(status: number, end: number): void {
    const route = this.route;
    // A wait that failed (the app did not start) counts as waited too.
    const waitedMs = this.queued ? end - this.queuedAt : this.waitedMs;
    route.recordSpan?.(
      route.app,
      hopSpan(this.trace!, {
        method: this.method,
        pub: this.pub,
        status,
        replica: this.replica?.id,
        start: this.start,
        end,
        waitedMs,
        failure: this.failure,
      }),
    );
  }
}

function idempotent(method: string | undefined): boolean {
  return method === "GET" || method === "HEAD" || method === "OPTIONS" || method === "DELETE";
}
