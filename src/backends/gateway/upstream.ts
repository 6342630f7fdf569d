/**
 * The upstream side: a pool of keep-alive connections per replica, each with its response
 * reader. With node's http client (ClientRequest, Agent, IncomingMessage, pipe) instead, the
 * gateway used 2.4 times the CPU per request (bench/RESULTS.md, "Gateway").
 */
import { connect } from "node:net";
import type { Socket } from "node:net";
import { ResponseReader, type ConnectionEvents, type ResponseSink } from "./response-reader.ts";

const IDLE_MAX = 256;
/**
 * What every upstream connection reads into (`onread`): without it node allocates a 64 KiB
 * buffer for each read and shrinks it to the bytes read (malloc, copy, free and a stream push
 * per read). One buffer serves all: a read's bytes are handled before the next read starts,
 * and the response reader copies whatever it keeps or hands on.
 */
const READ_BUFFER = Buffer.allocUnsafe(64 * 1024);

export class UpstreamError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

export class Pool {
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
    const idleMs = c.reader.idleMs;
    if (this.closed || this.idle.length >= IDLE_MAX || idleMs <= 0) {
      c.socket.destroy();
      return;
    }
    c.idleUntil = Date.now() + idleMs;
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
export class Conn implements ConnectionEvents {
  readonly socket: Socket;
  readonly reader = new ResponseReader(this);
  /** Served a response before: a reset before any byte may be the keep-alive race. */
  reused = false;
  idleUntil = 0;
  /** The request body is still being written: the connection cannot be reused before. */
  sending = false;
  /** Bytes of the current response arrived (a failure after them is not retryable). */
  private received = false;

  constructor(private readonly pool: Pool) {
    const socket = connect({
      host: pool.host,
      port: pool.port,
      noDelay: true,
      onread: {
        buffer: READ_BUFFER,
        // Pausing is the reader's to ask for (`pause`), not the callback's answer.
        callback: (n: number, buffer: Uint8Array) => {
          this.onData((buffer as Buffer).subarray(0, n));
          return true;
        },
      },
    });
    this.socket = socket;
    socket.on("error", (err: NodeJS.ErrnoException) => this.fail(err));
    socket.on("close", () => this.onClose());
  }

  /** The exchange reading the current response. */
  get sink(): ResponseSink | undefined {
    return this.reader.sink;
  }

  /** Starts an exchange: the caller writes the request; the response goes to `sink`. */
  start(sink: ResponseSink, headOnly: boolean): void {
    this.reader.start(sink, headOnly);
    this.received = false;
  }

  /** The exchange gave up on this connection (client gone, timeout). */
  abandon(): void {
    this.reader.sink = undefined;
    this.socket.destroy();
  }

  /** The request body is fully written (until then, a finished response drops the connection). */
  sent(): void {
    this.sending = false;
  }

  /** `chunk` is a view of the shared read buffer: valid during this call only. */
  private onData(chunk: Buffer): void {
    if (this.reader.sink === undefined) {
      // Bytes nobody asked for: the connection is out of step.
      this.socket.destroy();
      return;
    }
    this.received = true;
    this.reader.read(chunk);
    // A response still going on after these bytes: its head must not wait for more of them
    // (an SSE stream's next event may be minutes away).
    if (this.reader.inBody) this.reader.sink!.onPause();
  }

  pause(): void {
    this.socket.pause();
  }

  complete(reusable: boolean): void {
    this.reused = true;
    if (reusable && !this.sending) {
      // Paused for a slow client, it may have read its response's end in the same chunk: the
      // next request on it must be read (and a close by the app seen while it idles).
      this.socket.resume();
      this.pool.release(this);
    } else {
      this.pool.forget(this);
      this.socket.destroy();
    }
  }

  invalid(why: string): void {
    this.fail(new UpstreamError(`invalid response: ${why}`, "EPROTO"));
    this.socket.destroy();
  }

  drop(): void {
    this.socket.destroy();
  }

  private fail(err: NodeJS.ErrnoException): void {
    const sink = this.reader.stop();
    this.pool.forget(this);
    sink?.onFail(err, !this.received);
  }

  private onClose(): void {
    if (this.reader.sink !== undefined && this.reader.untilClose) {
      const sink = this.reader.stop()!;
      this.pool.forget(this);
      sink.onEnd(undefined);
      return;
    }
    this.fail(new UpstreamError("the app closed the connection", "ECONNRESET"));
  }
}
