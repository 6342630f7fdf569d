/**
 * The fast path of the client side: a connection whose requests the gateway reads itself, as
 * long as they are plain — HTTP/1.1, no body, no upgrade, authorized, with a replica ready —
 * and whose responses it frames itself. node's http server (its request parser, IncomingMessage
 * and ServerResponse, their streams) was about half the gateway's JavaScript time per request
 * (bench/RESULTS.md, "Gateway, closed loop against nginx"). The first request that is not plain, and
 * everything after it on that connection, goes to node's http server with the bytes read so
 * far: bodies, upgrades, login links, refusals and 401s, requests that wait for an app to
 * wake, malformed requests and requests without Host (which node answers 400) are all served
 * there, as before.
 */
import { STATUS_CODES } from "node:http";
import type { Socket } from "node:net";
import { performance } from "node:perf_hooks";
import { authorized, isLogin, refusal, sessionCookie, type AuthHooks } from "./auth.ts";
import { Exchange, type ClientSide } from "./exchange.ts";
import { BODY_NONE, readRequestHead, requestHead } from "./request-head.ts";
import type { Route } from "./route.ts";

/** node's default maximum header size: a longer head is node's to refuse (431). */
const MAX_HEAD = 16 * 1024;
/** An idle keep-alive connection (or a head that stalls) is closed after this, as node does. */
const KEEP_ALIVE_MS = 5000;
/** node's headersTimeout: a head still incomplete after this is node's to time out. */
const HEADERS_TIMEOUT_MS = 60_000;
/** Pipelined bytes kept while a response is in progress, before the socket is paused. */
const MAX_AHEAD = 64 * 1024;
const CRLFCRLF = Buffer.from("\r\n\r\n");
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const INVALID_VALUE = /[^\t\x20-\x7e\x80-\xff]/;
const LAST_CHUNK = Buffer.from("0\r\n\r\n");
const CRLF = Buffer.from("\r\n");

export interface Listener {
  route: Route;
  /** The public listener (authenticated, the edge) rather than the internal one. */
  pub: boolean;
  hooks: AuthHooks;
  /** Gives the connection, and the bytes read from it, to node's http server. */
  handOver(socket: Socket, read: Buffer | undefined): void;
}

export class ClientConnection implements ClientSide {
  private buffered: Buffer | undefined;
  /** When the first bytes of a head still incomplete came (0: none pending). */
  private headSince = 0;
  private exchange: Exchange | undefined;
  private readonly client: string;
  // The response in progress.
  private pending = "";
  private chunked = false;
  private bodyless = false;
  private close = false;
  private draining = false;
  /** The `Date` header node adds when the app sent none, made once a second at most. */
  private dateSecond = 0;
  private dateValue = "";
  headersSent = false;
  finished = false;
  statusCode = 0;

  constructor(
    private readonly listener: Listener,
    private readonly socket: Socket,
  ) {
    this.client = socket.remoteAddress ?? "";
    socket.setNoDelay(true);
    socket.setTimeout(KEEP_ALIVE_MS);
    socket.on("data", this.onData);
    socket.on("timeout", this.onTimeout);
    socket.on("end", this.onEnd);
    socket.on("error", this.onError);
    socket.on("close", this.onClose);
    listener.route.clients.add(socket);
  }

  private readonly onData = (chunk: Buffer): void => {
    this.buffered = this.buffered === undefined ? chunk : Buffer.concat([this.buffered, chunk]);
    if (this.exchange !== undefined) {
      // Pipelined: read once the response in progress is over.
      if (this.buffered.length > MAX_AHEAD) this.socket.pause();
      return;
    }
    this.serve();
  };

  private serve(): void {
    try {
      if (this.exchange === undefined) this.next();
    } catch {
      // A bug here must cost one connection, not the process that hosts the gateway.
      this.socket.destroy();
    }
  }

  /** Serves the next request read, if a whole head is there. */
  private next(): void {
    const bytes = this.buffered;
    if (bytes === undefined || this.socket.destroyed) return;
    const end = bytes.indexOf(CRLFCRLF);
    if (end < 0) {
      const now = Date.now();
      if (this.headSince === 0) this.headSince = now;
      // Too long, or trickling in for too long: node's server refuses or times it out.
      if (bytes.length > MAX_HEAD || now - this.headSince > HEADERS_TIMEOUT_MS) this.handOver();
      return;
    }
    this.headSince = 0;
    const start = performance.now();
    const read = end <= MAX_HEAD ? readRequestHead(bytes.toString("latin1", 0, end)) : undefined;
    const { route, pub, hooks } = this.listener;
    if (read === undefined || (pub && isLogin(read.url))) return this.handOver();
    const head = requestHead(
      read,
      this.client,
      false,
      pub,
      route.ports.internal,
      sessionCookie(route.ports.public),
      route.traceNext(),
    );
    if (
      head.body !== BODY_NONE ||
      // HTTP/1.1 requires a Host: node's server answers 400 to a request without one.
      head.host === undefined ||
      refusal(route.app, pub, pub ? route.ports.public : route.ports.internal, head) ||
      !authorized(hooks, route, pub, head)
    ) {
      route.untrace(head); // node's path asks again
      return this.handOver();
    }
    const replica = route.pick();
    // Waiting for a replica (a wake-up) is node's path's: this connection serves only now.
    if (replica === undefined) {
      route.untrace(head);
      return this.handOver();
    }
    this.buffered = end + 4 < bytes.length ? bytes.subarray(end + 4) : undefined;
    if (this.socket.isPaused()) this.socket.resume();
    this.pending = "";
    this.headersSent = false;
    this.finished = false;
    this.statusCode = 0;
    this.close = read.close || route.retiring;
    this.bodyless = read.method === "HEAD";
    this.exchange = new Exchange(route, read.method, this, head, pub, start);
    this.exchange.dispatch(replica);
  }

  private handOver(): void {
    const socket = this.socket;
    socket.off("data", this.onData);
    socket.off("timeout", this.onTimeout);
    socket.off("end", this.onEnd);
    socket.off("error", this.onError);
    socket.off("close", this.onClose);
    socket.setTimeout(0);
    this.listener.route.clients.delete(socket);
    const read = this.buffered;
    this.buffered = undefined;
    this.listener.handOver(socket, read);
  }

  private httpDate(): string {
    const now = Date.now();
    const second = Math.floor(now / 1000);
    if (second !== this.dateSecond) {
      this.dateSecond = second;
      this.dateValue = new Date(now).toUTCString();
    }
    return this.dateValue;
  }

  private readonly onTimeout = (): void => {
    if (this.exchange === undefined) this.socket.destroy();
  };

  /** The client stopped sending: it has gone, as node's server takes it (no half-open). */
  private readonly onEnd = (): void => {
    if (this.exchange === undefined) this.socket.end();
    else this.socket.destroy();
  };

  private readonly onError = (): void => {};

  private readonly onClose = (): void => {
    this.listener.route.clients.delete(this.socket);
    this.over();
  };

  /** The exchange in progress is over (response sent, or the client gone). */
  private over(): void {
    const ex = this.exchange;
    if (ex === undefined) return;
    this.exchange = undefined;
    ex.closed();
  }

  // ClientSide: the response, framed here.

  watch(): void {}

  head(status: number, message: string | undefined, headers: string[]): void {
    const reason = message ?? STATUS_CODES[status] ?? "unknown";
    if (INVALID_VALUE.test(reason)) throw new Error("invalid status message");
    let text = `HTTP/1.1 ${status} ${reason}\r\n`;
    let length = false;
    let date = false;
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!;
      const value = headers[i + 1]!;
      if (!TOKEN.test(name) || INVALID_VALUE.test(value)) throw new Error("invalid header");
      if (name.length === 14 && name.toLowerCase() === "content-length") length = true;
      else if (name.length === 4 && name.toLowerCase() === "date") date = true;
      text += `${name}: ${value}\r\n`;
    }
    if (!date) text += `Date: ${this.httpDate()}\r\n`;
    this.bodyless ||= status === 204 || status === 304 || status < 200;
    this.chunked = !this.bodyless && !length;
    if (this.chunked) text += "Transfer-Encoding: chunked\r\n";
    if (this.close) text += "Connection: close\r\n";
    this.pending = `${text}\r\n`;
    this.statusCode = status;
    this.headersSent = true;
  }

  flush(): void {
    if (this.pending === "") return;
    this.socket.write(this.pending, "latin1");
    this.pending = "";
  }

  write(data: Buffer): boolean {
    const socket = this.socket;
    if (this.bodyless || data.length === 0) return true;
    socket.cork();
    this.flush();
    const ok = this.chunked ? this.chunk(data) : socket.write(data);
    socket.uncork();
    if (!ok && !this.draining) {
      this.draining = true;
      socket.once("drain", () => {
        this.draining = false;
        this.exchange?.resume();
      });
    }
    return ok;
  }

  private chunk(data: Buffer): boolean {
    this.socket.write(`${data.length.toString(16)}\r\n`, "latin1");
    this.socket.write(data);
    return this.socket.write(CRLF);
  }

  end(last: Buffer | undefined): void {
    const socket = this.socket;
    if (this.pending !== "" && !this.chunked) {
      // The common case, a whole response at once: one buffer, one write (no writev).
      const size = last === undefined || this.bodyless ? 0 : last.length;
      const out = Buffer.allocUnsafe(this.pending.length + size);
      const at = out.write(this.pending, 0, "latin1");
      if (size > 0) last!.copy(out, at);
      this.pending = "";
      socket.write(out);
      this.done();
      return;
    }
    socket.cork();
    this.flush();
    if (last !== undefined && last.length > 0 && !this.bodyless) {
      if (this.chunked) this.chunk(last);
      else socket.write(last);
    }
    if (this.chunked) socket.write(LAST_CHUNK);
    socket.uncork();
    this.done();
  }

  reply(status: number, body: string): void {
    this.statusCode = status;
    this.headersSent = true;
    this.socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
        `Content-Length: ${Buffer.byteLength(body)}\r\nDate: ${this.httpDate()}\r\n` +
        `${this.close ? "Connection: close\r\n" : ""}\r\n${this.bodyless ? "" : body}`,
    );
    this.done();
  }

  destroy(): void {
    this.socket.destroy();
  }

  /** The response went out: the exchange is over; on to the next request, if any. */
  private done(): void {
    this.finished = true;
    this.over();
    if (this.close) {
      this.socket.end();
      return;
    }
    if (this.buffered !== undefined) queueMicrotask(() => this.serve());
  }
}
