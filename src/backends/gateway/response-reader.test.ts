/**
 * The HTTP/1.1 response reader alone, fuzzed: valid responses read the same however their
 * bytes are split, bodies (chunked or not) come out exactly, and garbage ends in the
 * reader's error path (or a wait for more bytes), never in an exception.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { DROP_RESPONSE } from "./hop-by-hop.ts";
import { ResponseReader, type ConnectionEvents, type ResponseSink } from "./response-reader.ts";

/** Everything the reader reported, in order, the body bytes joined. */
interface Transcript {
  head?: { status: number; message: string | undefined; headers: string[] };
  body: Buffer;
  events: string[];
}

/** A connection and an exchange in one, recording what the reader tells them. */
function harness(headOnly = false) {
  const t: Transcript = { body: Buffer.alloc(0), events: [] };
  let gone = false;
  const sink: ResponseSink = {
    onHead(status, message, headers) {
      t.head = { status, message, headers };
      t.events.push("head");
      return true;
    },
    onBody(data) {
      t.body = Buffer.concat([t.body, data]);
      return true;
    },
    onPause() {},
    onEnd(last) {
      if (last) t.body = Buffer.concat([t.body, last]);
      t.events.push("end");
    },
    onFail(err) {
      t.events.push(`fail:${err.message}`);
    },
  };
  const conn: ConnectionEvents = {
    pause() {},
    complete(reusable) {
      t.events.push(`complete:${reusable}`);
    },
    // As the real connection does: the exchange is told, the socket closed.
    invalid(why) {
      reader.stop()?.onFail(Object.assign(new Error(why), { code: "EPROTO" }), false);
      gone = true;
    },
    drop() {
      t.events.push("drop");
      gone = true;
    },
  };
  const reader = new ResponseReader(conn);
  reader.start(sink, headOnly);
  /** Feeds bytes as a socket would, until the connection is closed. */
  const feed = (chunk: Buffer) => {
    if (!gone && reader.sink !== undefined) reader.read(chunk);
    else if (!gone && chunk.length > 0) {
      // Bytes nobody asked for: the connection drops them (and itself).
      t.events.push("drop");
      gone = true;
    }
  };
  return { t, reader, sink, feed };
}

interface Response {
  status: number;
  reason: string;
  headers: [string, string][];
  body: Buffer;
  framing: "length" | "chunked" | "close";
  /** Chunk sizes (chunked framing), summing to the body's length. */
  chunks: number[];
  extensions: boolean;
  trailers: [string, string][];
  interim: boolean;
}

const token = fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}$/);
const headerName = token.filter(
  (n) => !DROP_RESPONSE.has(n.toLowerCase()) && n.toLowerCase() !== "content-length",
);
// A value as the reader hands it on: no surrounding whitespace (it trims), no CR or LF.
const headerValue = fc.stringMatching(/^([\x21-\x7e]([ \x21-\x7e]{0,30}[\x21-\x7e])?)?$/);

const response: fc.Arbitrary<Response> = fc
  .record({
    status: fc.integer({ min: 200, max: 599 }).filter((s) => s !== 204 && s !== 304),
    reason: fc.stringMatching(/^[A-Za-z][ A-Za-z]{0,20}$/),
    headers: fc.array(fc.tuple(headerName, headerValue), { maxLength: 8 }),
    body: fc.uint8Array({ maxLength: 600 }).map((a) => Buffer.from(a)),
    framing: fc.constantFrom("length" as const, "chunked" as const, "close" as const),
    cuts: fc.array(fc.nat(), { maxLength: 6 }),
    extensions: fc.boolean(),
    trailers: fc.array(fc.tuple(headerName, headerValue), { maxLength: 2 }),
    interim: fc.boolean(),
  })
  .map(({ cuts, ...r }) => {
    // Chunk sizes: the body cut at the given points (no empty chunk: that one ends the body).
    const points = [...new Set(cuts.map((c) => c % (r.body.length + 1)))]
      .filter((p) => p > 0 && p < r.body.length)
      .sort((a, b) => a - b);
    const chunks: number[] = [];
    let from = 0;
    for (const p of [...points, r.body.length]) {
      if (p > from) chunks.push(p - from);
      from = p;
    }
    return { ...r, chunks };
  });

function encode(r: Response): Buffer {
  let head = r.interim ? "HTTP/1.1 100 Continue\r\n\r\n" : "";
  head += `HTTP/1.1 ${r.status} ${r.reason}\r\n`;
  for (const [n, v] of r.headers) head += `${n}: ${v}\r\n`;
  if (r.framing === "length") head += `Content-Length: ${r.body.length}\r\n`;
  if (r.framing === "chunked") head += "Transfer-Encoding: chunked\r\n";
  if (r.framing === "close") head += "Connection: close\r\n";
  head += "\r\n";
  if (r.framing !== "chunked") return Buffer.concat([Buffer.from(head, "latin1"), r.body]);
  const parts: Buffer[] = [Buffer.from(head, "latin1")];
  let at = 0;
  for (const size of r.chunks) {
    parts.push(Buffer.from(`${size.toString(16)}${r.extensions ? ";x=1" : ""}\r\n`, "latin1"));
    parts.push(r.body.subarray(at, at + size), Buffer.from("\r\n"));
    at += size;
  }
  let end = "0\r\n";
  for (const [n, v] of r.trailers) end += `${n}: ${v}\r\n`;
  parts.push(Buffer.from(`${end}\r\n`, "latin1"));
  return Buffer.concat(parts);
}

/** `bytes` cut at the given points (taken modulo its length). */
function split(bytes: Buffer, cuts: number[]): Buffer[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let from = 0;
  for (const p of [...points, bytes.length]) {
    out.push(bytes.subarray(from, p));
    from = p;
  }
  return out;
}

function read(chunks: Buffer[], headOnly = false): Transcript {
  const { t, feed } = harness(headOnly);
  for (const c of chunks) feed(c);
  return t;
}

describe("the response reader", () => {
  it("reads a valid response the same whole or split at any byte boundaries, body exact", () => {
    fc.assert(
      fc.property(response, fc.array(fc.nat(), { maxLength: 12 }), (r, cuts) => {
        const bytes = encode(r);
        const whole = read([bytes]);
        const pieces = read(split(bytes, cuts));
        expect(pieces).toEqual(whole);
        // And what was read is the response: status, reason, headers (hop-by-hop ones and the
        // framing left out), the body byte for byte, completion as the framing says.
        // Content-Length goes on (node frames the response to the client by it).
        const length = r.framing === "length" ? ["Content-Length", String(r.body.length)] : [];
        expect(whole.head).toEqual({
          status: r.status,
          message: r.reason,
          headers: [...r.headers.flat(), ...length],
        });
        expect(whole.body.equals(r.body)).toBe(true);
        expect(whole.events).toEqual(
          r.framing === "close" ? ["head"] : ["head", "complete:true", "end"],
        );
      }),
      { numRuns: 400 },
    );
  });

  it("reads one byte at a time", () => {
    fc.assert(
      fc.property(response, (r) => {
        const bytes = encode(r);
        const bytewise = read([...bytes].map((b) => Buffer.from([b])));
        expect(bytewise).toEqual(read([bytes]));
      }),
      { numRuns: 100 },
    );
  });

  it("keeps nothing of a chunk after read returns: bytes come through one reused buffer", () => {
    fc.assert(
      fc.property(response, fc.integer({ min: 1, max: 64 }), (r, size) => {
        const bytes = encode(r);
        // As an upstream connection reads: every chunk in the same buffer, overwritten next.
        const shared = Buffer.alloc(size);
        const kept: Buffer[] = [];
        const { t, reader, sink } = harness();
        const onBody = sink.onBody.bind(sink);
        const onEnd = sink.onEnd.bind(sink);
        // A sink that holds on to what it is given (as a socket write still queued does).
        sink.onBody = (data) => (kept.push(data), onBody(Buffer.alloc(0)));
        sink.onEnd = (last) => (last && kept.push(last), onEnd(undefined));
        for (let at = 0; at < bytes.length && reader.sink !== undefined; at += size) {
          const n = bytes.copy(shared, 0, at, at + size);
          reader.read(shared.subarray(0, n));
          shared.fill(0x58);
        }
        t.body = Buffer.concat(kept);
        expect(t).toEqual(read([bytes]));
      }),
      { numRuns: 100 },
    );
  });

  it("reads response after response on one connection (a keep-alive reader is reused)", () => {
    fc.assert(
      fc.property(
        fc.array(
          response.filter((r) => r.framing !== "close"),
          { minLength: 2, maxLength: 4 },
        ),
        fc.array(fc.nat(), { maxLength: 6 }),
        (responses, cuts) => {
          const { t, reader, sink, feed } = harness();
          for (const r of responses) {
            t.body = Buffer.alloc(0);
            t.events = [];
            reader.start(sink, false);
            for (const c of split(encode(r), cuts)) feed(c);
            expect(t.body.equals(r.body)).toBe(true);
            expect(t.events).toEqual(["head", "complete:true", "end"]);
          }
        },
      ),
      { numRuns: 100 },
    );
  });

  it("does not reuse a connection that sent more than the response", () => {
    fc.assert(
      fc.property(
        response.filter((r) => r.framing !== "close"),
        fc.uint8Array({ minLength: 1, maxLength: 20 }),
        (r, extra) => {
          const t = read([Buffer.concat([encode(r), Buffer.from(extra)])]);
          expect(t.events).toEqual(["head", "complete:false", "end"]);
          expect(t.body.equals(r.body)).toBe(true);
        },
      ),
    );
  });

  it("answers a HEAD request without reading a body", () => {
    fc.assert(
      fc.property(
        response.filter((r) => r.framing === "length"),
        (r) => {
          const head = encode({ ...r, body: Buffer.alloc(0) }).toString("latin1");
          // The Content-Length of the body a GET would get, but no body follows.
          const bytes = head.replace("Content-Length: 0", `Content-Length: ${r.body.length}`);
          const t = read([Buffer.from(bytes, "latin1")], true);
          expect(t.events).toEqual(["head", "complete:true", "end"]);
          expect(t.body.length).toBe(0);
        },
      ),
    );
  });

  it("never throws on garbage: it fails the exchange, drops the connection or waits for more", () => {
    const garbage = fc.oneof(
      fc.uint8Array({ maxLength: 3000 }).map((a) => Buffer.from(a)),
      // A valid response with some bytes changed: the likelier kind of garbage.
      fc
        .tuple(
          response,
          fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), {
            minLength: 1,
            maxLength: 6,
          }),
        )
        .map(([r, edits]) => {
          const bytes = Buffer.from(encode(r));
          for (const [at, byte] of edits) bytes[at % bytes.length] = byte;
          return bytes;
        }),
      // A head that never ends, or a chunk line that never does.
      fc.nat({ max: 70_000 }).map((n) => Buffer.from(`HTTP/1.1 200 OK\r\nx: ${"a".repeat(n)}`)),
      fc
        .nat({ max: 10_000 })
        .map((n) =>
          Buffer.from(`HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${"1".repeat(n)}`),
        ),
    );
    fc.assert(
      fc.property(garbage, fc.array(fc.nat(), { maxLength: 8 }), (bytes, cuts) => {
        const t = read(split(bytes, cuts));
        const fails = t.events.filter((e) => e.startsWith("fail:"));
        const ends = t.events.filter((e) => e === "end");
        // The exchange hears of the response once: relayed to its end, failed, or neither yet.
        expect(fails.length + ends.length).toBeLessThanOrEqual(1);
        // Nothing reaches the exchange after it was failed or the connection dropped.
        const last = t.events.findIndex((e) => e.startsWith("fail:") || e === "drop");
        if (last >= 0) expect(t.events.slice(last + 1).filter((e) => e !== "drop")).toEqual([]);
        for (const f of fails) expect(f).toMatch(/^fail:[a-z]/);
      }),
      { numRuns: 600 },
    );
  });

  it("refuses a head too large, a bad chunk size and conflicting framing", () => {
    const cases: [string, string[]][] = [
      [`HTTP/1.1 200 OK\r\nx: ${"a".repeat(70_000)}`, ["fail:response head too large"]],
      [
        "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ["head", "fail:bad chunk size"],
      ],
      [
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n",
        ["fail:both Content-Length and Transfer-Encoding"],
      ],
      [
        "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
        ["fail:bad Content-Length"],
      ],
      ["HTTP/2 200 OK\r\n\r\n", ["fail:malformed status line"]],
      ["HTTP/1.1 101 Switching\r\n\r\n", ["fail:unexpected 101"]],
    ];
    for (const [bytes, events] of cases) {
      expect(read([Buffer.from(bytes, "latin1")]).events).toEqual(events);
    }
  });
});
