/**
 * An HTTP/1.1 response reader for one upstream connection, reused across its responses: the
 * head (status line and headers, hop-by-hop ones left out), then the body by Content-Length,
 * chunks (reassembled, trailers dropped) or until close. It does no I/O: bytes come in by
 * `read`, the response goes to the exchange's `ResponseSink`, and what concerns the connection
 * (pause, complete, invalid, drop) to its `ConnectionEvents` — so it can be tested alone.
 * The apps behind it are caravan's own processes; anything unexpected from them is invalid.
 * A chunk given to `read` is used during the call only (upstream connections read into one
 * shared buffer): what the reader keeps or hands to its sink is a copy.
 */
import { DROP_RESPONSE, hopTokens } from "./hop-by-hop.ts";

/** Idle keep-alive connections are closed after this, or 1 s before the app's Keep-Alive hint. */
export const IDLE_MS = 4000;
const MAX_HEAD = 64 * 1024;
const MAX_LINE = 8 * 1024;
const CRLFCRLF = Buffer.from("\r\n\r\n");
const RESPONSE_LENGTHS = new Set([...DROP_RESPONSE, "content-length"].map((h) => h.length));

// Reader states.
const HEAD = 0;
const LENGTH = 1;
const CHUNK_SIZE = 2;
const CHUNK_DATA = 3;
const CHUNK_END = 4;
const TRAILERS = 5;
const UNTIL_CLOSE = 6;
const IDLE = 7;

/** What the reader reports to the exchange whose response it reads. */
export interface ResponseSink {
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

/** What the reader reports to the connection it reads. */
export interface ConnectionEvents {
  /** The sink asked for a pause: stop reading until it resumes. */
  pause(): void;
  /** The response is complete (the sink is told next); `reusable` for another request. */
  complete(reusable: boolean): void;
  /** Bytes that are no valid response: fail the exchange, close the connection. */
  invalid(why: string): void;
  /** Close the connection without a word to anyone (bytes nobody asked for, a refused head). */
  drop(): void;
}

export class ResponseReader {
  sink: ResponseSink | undefined;
  /** How long the connection may stay idle, from the app's Keep-Alive hint. */
  idleMs = IDLE_MS;
  private state = IDLE;
  private keepAlive = true;
  private headOnly = false;
  private partial: Buffer | undefined;
  private line = "";
  private remaining = 0;
  private hintSeen = "";
  private hint = 0;

  constructor(private readonly conn: ConnectionEvents) {}

  /** Expects a response for `sink` (`headOnly`: to a HEAD request, so without a body). */
  start(sink: ResponseSink, headOnly: boolean): void {
    this.sink = sink;
    this.state = HEAD;
    this.headOnly = headOnly;
    this.keepAlive = true;
  }

  /** No response expected any more (the exchange is over or the connection failed). */
  stop(): ResponseSink | undefined {
    const sink = this.sink;
    this.sink = undefined;
    this.state = IDLE;
    return sink;
  }

  /** Reading a body that ends only when the connection closes. */
  get untilClose(): boolean {
    return this.state === UNTIL_CLOSE;
  }

  /** In the middle of a response, past its head. */
  get inBody(): boolean {
    return this.sink !== undefined && this.state !== HEAD;
  }

  read(chunk: Buffer): void {
    let i = 0;
    let n = chunk.length;
    while (i < n) {
      const sink: ResponseSink | undefined = this.sink;
      if (sink === undefined) {
        this.conn.drop();
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
            if (n - i > MAX_HEAD) return this.conn.invalid("response head too large");
            this.partial = Buffer.from(chunk.subarray(i));
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
          const data = Buffer.from(take === n ? chunk : chunk.subarray(i, i + take));
          i += take;
          this.remaining -= take;
          if (this.remaining > 0 || this.state === CHUNK_DATA) {
            if (this.remaining === 0) this.state = CHUNK_END;
            if (!sink.onBody(data)) this.conn.pause();
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
            if (this.line.length > MAX_LINE) return this.conn.invalid("chunk line too long");
            return;
          }
          const line = this.line + chunk.toString("latin1", i, nl);
          this.line = "";
          i = nl + 1;
          if (line.charCodeAt(line.length - 1) !== 13) return this.conn.invalid("bare LF");
          if (this.state === CHUNK_END) {
            if (line.length !== 1) return this.conn.invalid("chunk without CRLF");
            this.state = CHUNK_SIZE;
          } else if (this.state === CHUNK_SIZE) {
            const semi = line.indexOf(";");
            const hex = (semi < 0 ? line.slice(0, -1) : line.slice(0, semi)).trim();
            if (!/^[0-9a-fA-F]{1,8}$/.test(hex)) return this.conn.invalid("bad chunk size");
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
          if (!sink.onBody(Buffer.from(i === 0 ? chunk : chunk.subarray(i)))) this.conn.pause();
          return;
        }
        default:
          return this.conn.invalid("unexpected bytes");
      }
    }
  }

  /** Parses a response head; sets the body state. False when the connection was given up. */
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
      this.conn.invalid("malformed status line");
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
        this.conn.invalid("malformed header line");
        return false;
      }
      const name = head.slice(pos, colon);
      const value = head.slice(colon + 1, eol).trim();
      if (RESPONSE_LENGTHS.has(name.length)) {
        const lower = name.toLowerCase();
        if (lower === "content-length") {
          const v = /^\d{1,15}$/.test(value) ? Number(value) : NaN;
          if (Number.isNaN(v) || (length >= 0 && v !== length)) {
            this.conn.invalid("bad Content-Length");
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
        this.conn.invalid("unexpected 101");
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
        this.conn.invalid("both Content-Length and Transfer-Encoding");
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
      this.sink = undefined;
      this.conn.drop();
      return false;
    }
    return true;
  }

  /** The response is complete: the connection first (reused or dropped), then the sink. */
  private finish(last: Buffer | undefined, leftover: boolean): void {
    const sink = this.stop()!;
    this.conn.complete(this.keepAlive && !leftover);
    sink.onEnd(last);
  }
}
