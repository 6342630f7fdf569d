/**
 * The request head the gateway sends upstream, written in one pass over the client's raw
 * headers (no header object is built), and what that pass found on the way (credentials,
 * Host, the body's framing): one result per request, no state shared between requests.
 */
import { SESSION_COOKIE, bearer, type Credentials } from "./auth.ts";
import { DROP_REQUEST, hopTokens } from "./hop-by-hop.ts";
import { formatTraceparent, parseTraceparent } from "../../runtime/trace-context.ts";
import { randomHex, type HopTrace } from "./trace.ts";

/** The body's framing towards the app. */
export const BODY_NONE = 0;
export const BODY_LENGTH = 1;
export const BODY_CHUNKED = 2;
export type BodyFraming = typeof BODY_NONE | typeof BODY_LENGTH | typeof BODY_CHUNKED;

export interface RequestHead extends Credentials {
  /** Request line, headers, blank line: what goes upstream. */
  text: string;
  body: BodyFraming;
  /** The gateway's span for this request (when traced): its `traceparent` went upstream. */
  trace?: HopTrace;
}

/** What the head is built from: node's parse of the client's request. */
export interface ClientRequest {
  method?: string | undefined;
  url?: string | undefined;
  /** Names and values alternating, as received. */
  rawHeaders: string[];
}

/** Where a Host-less request is sent (an HTTP/1.0 client may send none). */
const HOST = "127.0.0.1";

// Lengths of every header name the scan acts on: other names skip toLowerCase.
const ACTED_ON_LENGTHS = new Set(
  [
    ...DROP_REQUEST,
    "host",
    "cookie",
    "authorization",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "traceparent",
  ].map((h) => h.length),
);

/**
 * The request head to send upstream, for a request from `client` (its address).
 * `upgrade` keeps Connection and Upgrade (they are the point of an upgrade request).
 * `edge`: the public listener, where the gateway is the first proxy: X-Forwarded-Proto and
 * -Host from the client are replaced, and so is its X-Forwarded-For (the client's address only);
 * on the internal one, a calling app's are kept (and the caller's address appended).
 * `port`: the internal listener's, for a Host-less request. `sessionName`: the route's own
 * session cookie (its value is noted; every caravan session cookie is removed).
 * `traced`: the gateway takes part in the trace (`trace.ts`): the client's `traceparent` is
 * replaced by one naming the gateway's span, a child of the client's (or of a new trace).
 * `listed`: header names the client's Connection header made hop-by-hop (a rare second pass).
 */
export function requestHead(
  req: ClientRequest,
  client: string,
  upgrade: boolean,
  edge: boolean,
  port: number,
  sessionName: string,
  traced = false,
  listed?: string[],
): RequestHead {
  const raw = req.rawHeaders;
  const found: RequestHead = {
    text: "",
    body: BODY_NONE,
    authorization: undefined,
    authorizations: 0,
    session: undefined,
    host: undefined,
  };
  let head = `${req.method} ${req.url} HTTP/1.1\r\n`;
  let connection: string | undefined;
  let xff: string | undefined;
  let proto = false;
  let fwdHost = false;
  let length: string | undefined;
  let chunked = false;
  let traceparent: string | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    let value = raw[i + 1]!;
    if (ACTED_ON_LENGTHS.has(name.length) || listed) {
      const lower = name.toLowerCase();
      if (listed?.includes(lower)) continue;
      switch (lower) {
        case "host":
          found.host = value;
          break;
        case "authorization":
          found.authorization = value;
          found.authorizations++;
          // A caravan token is for the gateway: the app never sees it (it opens every app).
          if (bearer(value)?.startsWith("cvn_")) continue;
          break;
        case "cookie":
          if (value.includes(SESSION_COOKIE)) {
            value = takeSession(value, sessionName, found);
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
        case "traceparent":
          if (!traced) break;
          traceparent ??= value;
          continue;
        default:
          if (DROP_REQUEST.has(lower)) continue;
      }
    }
    head += `${name}: ${value}\r\n`;
  }
  if (connection !== undefined && listed === undefined) {
    const tokens = hopTokens(connection, upgrade);
    if (tokens.length > 0) {
      return requestHead(req, client, upgrade, edge, port, sessionName, traced, tokens);
    }
  }
  const host = found.host;
  if (host === undefined) head += `host: ${HOST}:${port}\r\n`;
  head += `x-forwarded-for: ${xff === undefined ? client : `${xff}, ${client}`}\r\n`;
  if (!proto) head += "x-forwarded-proto: http\r\n";
  if (!fwdHost && host !== undefined) head += `x-forwarded-host: ${host}\r\n`;
  if (chunked) {
    found.body = BODY_CHUNKED;
    head += "transfer-encoding: chunked\r\n";
  } else if (length !== undefined && length !== "0") {
    found.body = BODY_LENGTH;
    head += `content-length: ${length}\r\n`;
  } else if (length !== undefined) {
    // Methods that usually carry a body say that this one is empty.
    head += "content-length: 0\r\n";
  }
  if (traced) {
    const parent = parseTraceparent(traceparent);
    const trace: HopTrace = {
      traceId: parent?.traceId ?? randomHex(16),
      spanId: randomHex(8),
      parentSpanId: parent?.spanId ?? null,
      target: req.url ?? "/",
    };
    found.trace = trace;
    head += `traceparent: ${formatTraceparent(trace)}\r\n`;
  }
  found.text = `${head}\r\n`;
  return found;
}

/**
 * Removes every caravan session cookie from a Cookie header (an app never sees one, not even
 * another app's), noting the value of the route's own (`sessionName`) in `found`.
 */
function takeSession(cookie: string, sessionName: string, found: Credentials): string {
  const kept: string[] = [];
  const own = `${sessionName}=`;
  for (const part of cookie.split(";")) {
    const pair = part.trim();
    if (pair.startsWith(own)) {
      found.session ??= pair.slice(own.length);
    } else if (pair.startsWith(SESSION_COOKIE)) {
      continue;
    } else if (pair) {
      kept.push(pair);
    }
  }
  return kept.join("; ");
}

/** A request head the gateway reads itself (see `client-connection.ts`). */
export interface ReadRequest extends ClientRequest {
  method: string;
  url: string;
  /** The client asked to close the connection after the response. */
  close: boolean;
}

const METHOD = /^[A-Z]{1,20}$/;
const TARGET = /^[\x21-\x7e]+$/;
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

/**
 * Reads an HTTP/1.1 request head (`head`: its bytes as latin1, up to the blank line): method,
 * target, raw headers with their values trimmed. Undefined for anything the gateway leaves to
 * node's parser: another version, an invalid character or line, a request with a body, an
 * upgrade, `Expect`, CONNECT (node answers those, or refuses them as it should).
 */
export function readRequestHead(head: string): ReadRequest | undefined {
  let eol = head.indexOf("\r\n");
  if (eol < 0) eol = head.length;
  const sp1 = head.indexOf(" ");
  const sp2 = sp1 < 0 ? -1 : head.indexOf(" ", sp1 + 1);
  if (sp1 <= 0 || sp2 < 0 || eol - sp2 !== 9 || !head.startsWith(" HTTP/1.1", sp2)) {
    return undefined;
  }
  const method = head.slice(0, sp1);
  const url = head.slice(sp1 + 1, sp2);
  if (!METHOD.test(method) || method === "CONNECT" || !TARGET.test(url)) return undefined;
  const rawHeaders: string[] = [];
  let close = false;
  for (let pos = eol + 2; pos < head.length; pos = eol + 2) {
    eol = head.indexOf("\r\n", pos);
    if (eol < 0) eol = head.length;
    const colon = head.indexOf(":", pos);
    if (colon <= pos || colon > eol) return undefined;
    const name = head.slice(pos, colon);
    let from = colon + 1;
    let to = eol;
    while (from < to && (head.charCodeAt(from) === 32 || head.charCodeAt(from) === 9)) from++;
    while (to > from && (head.charCodeAt(to - 1) === 32 || head.charCodeAt(to - 1) === 9)) to--;
    const value = head.slice(from, to);
    if (!TOKEN.test(name) || !FIELD_VALUE.test(value)) return undefined;
    switch (name.length) {
      case 6: // expect
      case 7: // upgrade
      case 14: // content-length
      case 17: {
        // transfer-encoding
        const lower = name.toLowerCase();
        if (lower === "expect" || lower === "upgrade" || lower === "transfer-encoding") {
          return undefined;
        }
        if (lower === "content-length" && value !== "0") return undefined;
        break;
      }
      case 10:
        if (name.toLowerCase() === "connection" && value.toLowerCase().includes("close")) {
          close = true;
        }
    }
    rawHeaders.push(name, value);
  }
  return { method, url, rawHeaders, close };
}
