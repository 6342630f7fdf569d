/**
 * Who may pass the public listener, and the gateway's own answers about it: bearer tokens,
 * session cookies (from a one-time login link), the refusals that come before any of that.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { performance } from "node:perf_hooks";
import type { Route } from "./route.ts";

/**
 * The prefix of session cookies: each app's is `caravan_session_<its public port>`, since a
 * browser sends every cookie of 127.0.0.1 to every port there. None is ever forwarded to an app.
 */
export const SESSION_COOKIE = "caravan_session";
/** The session cookie of the app whose public listener is on `port`. */
export const sessionCookie = (port: number) => `${SESSION_COOKIE}_${port}`;
export const LOGIN_PATH = "/_caravan/login";

/** The control plane's answers about tokens and sessions (part of `GatewayHooks`). */
export interface AuthHooks {
  /** Public side only: true when the bearer token or session cookie value is valid for `app`. */
  authorize(token: string, app: string): boolean;
  /** Redeems a one-time login code (from a link), returning a session value to set as a cookie, or undefined. */
  redeem?(code: string, app: string): string | undefined;
}

/** What auth needs to know of a request (found by the request-head scan). */
export interface Credentials {
  authorization: string | undefined;
  /** How many Authorization headers: more than one is refused, never guessed at. */
  authorizations: number;
  /** The value of the route's own session cookie. */
  session: string | undefined;
  host: string | undefined;
}

export function bearer(authorization: string | undefined): string | undefined {
  if (authorization === undefined || authorization.length < 8) return undefined;
  if (authorization.slice(0, 7).toLowerCase() !== "bearer ") return undefined;
  return authorization.slice(7).trim() || undefined;
}

/** True when the request may reach the app: always on the internal listener. */
export function authorized(
  hooks: AuthHooks,
  route: Route,
  pub: boolean,
  found: Credentials,
): boolean {
  if (!pub || !route.options.requiresAuth) return true;
  try {
    const token = bearer(found.authorization);
    if (token !== undefined && hooks.authorize(token, route.app)) return true;
    return found.session !== undefined && hooks.authorize(found.session, route.app);
  } catch {
    return false;
  }
}

export function unauthorizedBody(app: string): string {
  return `${JSON.stringify({
    code: "UNAUTHORIZED",
    message: `${app} requires a token: create one with \`caravan token create\`, then send "Authorization: Bearer <token>"`,
  })}\n`;
}

/**
 * Why a request is refused before anything else: two Authorization headers (which one
 * counts would be a guess), or — on an internal listener — a Host that is not a loopback name
 * with the listener's port (a browser page of another site reaching it by DNS rebinding).
 * Undefined when it may go on.
 */
export function refusal(
  app: string,
  pub: boolean,
  port: number,
  found: Credentials,
): [number, string] | undefined {
  if (found.authorizations > 1)
    return [400, `more than one Authorization header in a request to ${app}: send exactly one`];
  if (pub || found.host === undefined) return undefined;
  const host = found.host.toLowerCase();
  if (host === `127.0.0.1:${port}` || host === `localhost:${port}` || host === `[::1]:${port}`)
    return undefined;
  return [
    421,
    `${app}'s internal endpoint answers only to Host 127.0.0.1:${port}, localhost:${port} or [::1]:${port}, not ${JSON.stringify(found.host.slice(0, 200))}: call it at http://127.0.0.1:${port}, or use the app's public endpoint`,
  ];
}

export function refusalBody(message: string): string {
  return `${JSON.stringify({ code: "REFUSED", message })}\n`;
}

/** True for the login path (`/_caravan/login`, with or without a query). */
export function isLogin(url: string): boolean {
  return (
    url.startsWith(LOGIN_PATH) &&
    (url.length === LOGIN_PATH.length || url[LOGIN_PATH.length] === "?")
  );
}

/** Trades a login link's one-time code for a session cookie, and redirects to `next`. */
export function login(
  hooks: AuthHooks,
  route: Route,
  req: IncomingMessage,
  res: ServerResponse,
  start: number,
): void {
  const query = new URL(req.url!, "http://gateway").searchParams;
  const code = query.get("code");
  let session: string | undefined;
  try {
    session = code && req.method === "GET" ? hooks.redeem?.(code, route.app) : undefined;
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
  res.once("close", () => route.traffic.record(res.statusCode, performance.now() - start));
}

/**
 * A redirect target from `next`: a local path only (one leading slash, not "//" nor "/\\",
 * which browsers take for another host), in printable ASCII (a valid Location value).
 */
function safeNext(next: string | null): string {
  return next && /^\/(?![/\\])[\x21-\x7e]*$/.test(next) ? next : "/";
}
