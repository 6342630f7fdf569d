/**
 * Which headers stop at the gateway (hop-by-hop, RFC 9110 §7.6.1) on each side: one place
 * for the rules the request head and the response reader both apply.
 */

// Request headers not forwarded. X-Forwarded-For is rebuilt; Content-Length and
// Transfer-Encoding are rewritten from what node's parser found.
export const DROP_REQUEST = new Set([
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
export const DROP_RESPONSE = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/** Header names a Connection header lists (beyond close / keep-alive / upgrade). */
export function hopTokens(connection: string, upgrade: boolean): string[] {
  return connection
    .toLowerCase()
    .split(",")
    .map((t) => t.trim())
    .filter((t) => t && t !== "close" && t !== "keep-alive" && !(upgrade && t === "upgrade"));
}
