/**
 * The request head sent upstream, fuzzed over any raw headers a client may send: it never
 * throws, is always a well-formed head, passes on every end-to-end header unchanged and in
 * order, and never passes on a hop-by-hop header, a caravan token or a session cookie.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { parseTraceparent } from "../../runtime/trace-context.ts";
import { SESSION_COOKIE } from "./auth.ts";
import { DROP_REQUEST } from "./hop-by-hop.ts";
import {
  BODY_CHUNKED,
  BODY_LENGTH,
  BODY_NONE,
  readRequestHead,
  requestHead,
} from "./request-head.ts";

const OWN = `${SESSION_COOKIE}_8000`;
const ACTED_ON = new Set([
  ...DROP_REQUEST,
  "host",
  "cookie",
  "authorization",
  "x-forwarded-for",
  "x-forwarded-proto",
  "x-forwarded-host",
]);

/** A name in any letter case: clients send them so. */
const anyCase = (name: string) =>
  fc
    .array(fc.boolean(), { minLength: name.length, maxLength: name.length })
    .map((up) => [...name].map((c, i) => (up[i] ? c.toUpperCase() : c)).join(""));
const name = fc.oneof(
  fc.constantFrom(...ACTED_ON, "x-custom", "accept").chain(anyCase),
  fc.stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}$/),
);
const value = fc.oneof(
  fc.stringMatching(/^[\t -~]{0,40}$/),
  fc.constantFrom(
    "Bearer cvn_secret",
    "bearer other",
    `a=1; ${OWN}=mine; ${SESSION_COOKIE}_9=theirs; b=2`,
    "close, x-custom",
    "keep-alive, Upgrade",
    "websocket",
    "chunked",
    "0",
    "12",
  ),
);
const rawHeaders = fc.array(fc.tuple(name, value), { maxLength: 14 }).map((h) => h.flat());

function lines(text: string): [string, string][] {
  expect(text.endsWith("\r\n\r\n")).toBe(true);
  return text
    .slice(0, -4)
    .split("\r\n")
    .slice(1)
    .map((l) => {
      const colon = l.indexOf(": ");
      expect(colon).toBeGreaterThan(0);
      return [l.slice(0, colon), l.slice(colon + 2)];
    });
}

describe("the request head", () => {
  it("is well formed for any headers and passes on what is end to end, never what is not", () => {
    fc.assert(
      fc.property(rawHeaders, fc.boolean(), fc.boolean(), (raw, upgrade, edge) => {
        const req = { method: "POST", url: "/a?b=1", rawHeaders: raw };
        const head = requestHead(req, "10.0.0.7", upgrade, edge, 8001, OWN);
        expect(head.text.startsWith("POST /a?b=1 HTTP/1.1\r\n")).toBe(true);
        const out = lines(head.text);
        const names = out.map(([n]) => n.toLowerCase());

        const pairs: [string, string][] = [];
        for (let i = 0; i < raw.length; i += 2) pairs.push([raw[i]!, raw[i + 1]!]);
        // Header names a Connection header made hop-by-hop.
        const listed = new Set(
          pairs
            .filter(([n]) => n.toLowerCase() === "connection")
            .flatMap(([, v]) => v.toLowerCase().split(","))
            .map((t) => t.trim())
            .filter(
              (t) => t && t !== "close" && t !== "keep-alive" && !(upgrade && t === "upgrade"),
            ),
        );
        // Every header the gateway does not act on goes on unchanged, in order.
        const endToEnd = pairs.filter(
          ([n]) => !ACTED_ON.has(n.toLowerCase()) && !listed.has(n.toLowerCase()),
        );
        expect(out.filter(([n]) => !ACTED_ON.has(n.toLowerCase()))).toEqual(endToEnd);
        for (const n of listed) expect(names).not.toContain(n);

        // Hop-by-hop ones stop here (an upgrade keeps Connection and Upgrade: its point).
        for (const drop of DROP_REQUEST) {
          if (drop === "content-length" || drop === "transfer-encoding") continue;
          if (upgrade && (drop === "connection" || drop === "upgrade") && !listed.has(drop))
            continue;
          expect(names).not.toContain(drop);
        }
        // The body's framing is the gateway's own: at most one header, matching what it found.
        const framing = out.filter(([n]) => n === "content-length" || n === "transfer-encoding");
        expect(framing.length).toBeLessThanOrEqual(1);
        if (head.body === BODY_CHUNKED) expect(framing).toEqual([["transfer-encoding", "chunked"]]);
        if (head.body === BODY_LENGTH) expect(framing[0]?.[0]).toBe("content-length");
        if (head.body === BODY_NONE) expect(framing.filter(([, v]) => v !== "0")).toEqual([]);

        // Caravan's credentials are for the gateway alone.
        for (const [n, v] of out) {
          if (n.toLowerCase() === "authorization") expect(v).not.toMatch(/^bearer\s+cvn_/i);
          if (n.toLowerCase() === "cookie") expect(v).not.toContain(SESSION_COOKIE);
        }
        expect(head.authorizations).toBe(
          pairs.filter(([n]) => n.toLowerCase() === "authorization" && !listed.has("authorization"))
            .length,
        );

        // One X-Forwarded-For, ending with the client; the gateway at the edge trusts no claim.
        const xff = out.filter(([n]) => n === "x-forwarded-for");
        expect(xff.length).toBe(1);
        expect(xff[0]![1].endsWith("10.0.0.7")).toBe(true);
        if (edge) expect(xff[0]![1]).toBe("10.0.0.7");
        // A Host always (the internal listener's, when the client sent none).
        expect(names.filter((n) => n === "host").length).toBeGreaterThanOrEqual(1);
      }),
      { numRuns: 1000 },
    );
  });

  it("traced: sends one traceparent, the gateway's, in the client's trace when it named a valid one", () => {
    const CLIENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const traceparent = fc.tuple(
      fc.constantFrom("traceparent", "TraceParent"),
      fc.oneof(
        fc.constant(CLIENT),
        fc.constantFrom("00-00000000000000000000000000000000-00f067aa0ba902b7-01", "garbage", ""),
        fc.stringMatching(/^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/),
      ),
    );
    const headers = fc
      .array(fc.oneof(fc.tuple(name, value), traceparent), { maxLength: 10 })
      .map((h) => h.flat());
    fc.assert(
      fc.property(headers, fc.boolean(), fc.boolean(), (raw, traced, edge) => {
        const req = { method: "GET", url: "/p?q=1", rawHeaders: raw };
        const head = requestHead(req, "c", false, edge, 8001, OWN, traced);
        const sent = lines(head.text).filter(([n]) => n.toLowerCase() === "traceparent");
        const theirs: [string, string][] = [];
        for (let i = 0; i < raw.length; i += 2)
          if (raw[i]!.toLowerCase() === "traceparent") theirs.push([raw[i]!, raw[i + 1]!]);
        if (!traced) {
          // Not traced: the client's pass as they came, and nothing is made.
          expect(sent).toEqual(theirs);
          expect(head.trace).toBeUndefined();
          return;
        }
        expect(sent).toHaveLength(1);
        const ours = parseTraceparent(sent[0]![1])!;
        expect(sent[0]![1]).toMatch(/^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/);
        // The first traceparent the client sent decides (an invalid one starts a new trace).
        const parent = parseTraceparent(theirs[0]?.[1]);
        expect(head.trace).toEqual({
          traceId: parent?.traceId ?? ours.traceId,
          spanId: ours.spanId,
          parentSpanId: parent?.spanId ?? null,
          target: "/p?q=1",
        });
        expect(ours.traceId).toBe(head.trace!.traceId);
        expect(ours.spanId).not.toBe(parent?.spanId);
      }),
      { numRuns: 500 },
    );
  });

  it("finds the route's own session cookie and removes every caravan one", () => {
    const head = requestHead(
      {
        method: "GET",
        url: "/",
        rawHeaders: ["Host", "h", "Cookie", `a=1; ${OWN}=mine; ${SESSION_COOKIE}_9=theirs; b=2`],
      },
      "127.0.0.1",
      false,
      true,
      8001,
      OWN,
    );
    expect(head.session).toBe("mine");
    expect(lines(head.text)).toContainEqual(["Cookie", "a=1; b=2"]);
  });

  it("keeps no state between requests", () => {
    const withAuth = { method: "GET", url: "/", rawHeaders: ["Authorization", "Bearer x"] };
    const without = { method: "GET", url: "/", rawHeaders: ["Accept", "*/*"] };
    const first = requestHead(withAuth, "c", false, true, 1, OWN);
    const second = requestHead(without, "c", false, true, 1, OWN);
    expect(first.authorization).toBe("Bearer x");
    expect(second.authorization).toBeUndefined();
    expect(second.authorizations).toBe(0);
  });
});

describe("reading a client's request head (the fast path)", () => {
  const method = fc.constantFrom("GET", "HEAD", "DELETE", "OPTIONS", "POST", "PATCH");
  const target = fc.stringMatching(/^\/[\x21-\x7e]{0,40}$/);
  const fieldName = fc
    .stringMatching(/^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,24}$/)
    .filter(
      (n) =>
        !["expect", "upgrade", "transfer-encoding", "content-length"].includes(n.toLowerCase()),
    );
  const fieldValue = fc.stringMatching(/^([\x21-\x7e]([\t \x21-\x7e]{0,30}[\x21-\x7e])?)?$/);

  it("reads any valid head: method, target and headers exactly", () => {
    fc.assert(
      fc.property(
        method,
        target,
        fc.array(fc.tuple(fieldName, fieldValue, fc.constantFrom("", " ", "  ", "\t")), {
          maxLength: 12,
        }),
        (m, url, headers) => {
          const text =
            `${m} ${url} HTTP/1.1` +
            headers.map(([n, v, ws]) => `\r\n${n}:${ws}${v}${ws}`).join("");
          const read = readRequestHead(text);
          expect(read).toEqual({
            method: m,
            url,
            rawHeaders: headers.flatMap(([n, v]) => [n, v]),
            close: headers.some(
              ([n, v]) => n.toLowerCase() === "connection" && v.toLowerCase().includes("close"),
            ),
          });
        },
      ),
      { numRuns: 500 },
    );
  });

  it("never throws on garbage, and what it reads can never add a line to the upstream head", () => {
    const bytes = fc.oneof(
      fc.uint8Array({ maxLength: 400 }).map((a) => Buffer.from(a).toString("latin1")),
      fc
        .tuple(
          fc.stringMatching(/^GET \/[ -~]{0,20} HTTP\/1\.1(\r\n[ -~]{0,30}){0,5}$/),
          fc.nat(),
          fc.integer({ min: 0, max: 255 }),
        )
        .map(([t, at, byte]) => {
          const chars = [...t];
          chars[at % Math.max(1, chars.length)] = String.fromCharCode(byte);
          return chars.join("");
        }),
    );
    fc.assert(
      fc.property(bytes, (text) => {
        const read = readRequestHead(text);
        if (read === undefined) return;
        for (const part of [read.method, read.url, ...read.rawHeaders]) {
          expect(part).not.toMatch(/[\r\n\0]/);
        }
        const head = requestHead(read, "c", false, true, 1, OWN);
        expect(head.text.split("\r\n\r\n")).toEqual([expect.any(String), ""]);
      }),
      { numRuns: 2000 },
    );
  });

  it("leaves to node's parser what is not plain", () => {
    for (const text of [
      "GET / HTTP/1.0\r\nHost: a",
      "POST / HTTP/1.1\r\nContent-Length: 3",
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked",
      "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade",
      "PUT / HTTP/1.1\r\nExpect: 100-continue",
      "CONNECT a:443 HTTP/1.1",
      "GET / HTTP/1.1\r\n folded: value",
      "GET / HTTP/1.1\r\nBad Name: x",
      "GET / HTTP/1.1\r\nX: a\nInjected: b",
      "GET /a b HTTP/1.1",
    ]) {
      expect(readRequestHead(text), JSON.stringify(text)).toBeUndefined();
    }
    expect(readRequestHead("GET / HTTP/1.1\r\nContent-Length: 0")?.method).toBe("GET");
  });
});
