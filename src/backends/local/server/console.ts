/**
 * The web console (DESIGN §10): its built assets (`dist/console`, made by Vite at package
 * build time) served on the API's own address, and the browser session it runs on. The
 * console calls the same HTTP API as the CLI; a browser authenticates with a session cookie
 * from a one-time login link (`caravan console`) instead of the bearer token.
 */
import { existsSync, readFileSync, readdirSync, statSync } from "node:fs";
import { extname, join, relative, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { NAME_PATTERN } from "../../../sdk/validation.ts";
import { CONSOLE_LOGIN_PATH, type ControlPlane } from "../control-plane.ts";

export const CONSOLE_PATH = "/console/";
/**
 * Where the console calls the API: the same routes, under the console's path, so that its
 * session cookie can be scoped to that path (a cookie is per host, not per port: one for `/`
 * would go to every other server on 127.0.0.1 the browser visits).
 */
export const CONSOLE_API_PREFIX = "/console/api";

/** The API route a console request is for (`/console/api/v1/…` → `/v1/…`); others as they are. */
export const apiUrlOf = (url: string) =>
  url.startsWith(`${CONSOLE_API_PREFIX}/v1/`) ? url.slice(CONSOLE_API_PREFIX.length) : url;
/**
 * The header a cookie-authenticated request that changes something must carry: a page of
 * another origin cannot send it without a CORS preflight, which this API never grants.
 */
export const CONSOLE_HEADER = "x-caravan-console";
/** Sessions last as long as the token store keeps them (12 h). */
const SESSION_MAX_AGE_S = 12 * 60 * 60;

/**
 * The session cookie's name, per API port (cookies are per host, not per port: two homes'
 * control planes on 127.0.0.1 keep theirs apart). It starts with the gateway's session
 * prefix, so the gateway never forwards it to an app on the same host.
 */
export const consoleCookie = (port: number) => `caravan_session_console_${port}`;

/** What every console page and asset answers with: no framing, no referrer (login codes). */
const PAGE_HEADERS = {
  "content-security-policy":
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
} as const;

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".json": "application/json",
  ".ico": "image/x-icon",
  ".woff2": "font/woff2",
};

interface Asset {
  body: Buffer;
  type: string;
  /** Vite names what it emits under assets/ by content hash: cached for good. */
  immutable: boolean;
}

/** Where the built console is: `dist/console`, beside the compiled `dist/backends`. */
export function consoleAssetsDir(): string | undefined {
  const here = fileURLToPath(new URL(".", import.meta.url));
  for (const dir of [join(here, "../../../console"), join(here, "../../../../dist/console")])
    if (existsSync(join(dir, "index.html"))) return dir;
  return undefined;
}

/** Every file of the built console, read once (a few hundred KB). */
function loadAssets(dir: string): Map<string, Asset> {
  const out = new Map<string, Asset>();
  const walk = (d: string) => {
    for (const entry of readdirSync(d)) {
      const path = join(d, entry);
      if (statSync(path).isDirectory()) walk(path);
      else {
        const rel = relative(dir, path).split(sep).join("/");
        out.set(rel, {
          body: readFileSync(path),
          type: TYPES[extname(path)] ?? "application/octet-stream",
          immutable: rel.startsWith("assets/"),
        });
      }
    }
  };
  walk(dir);
  return out;
}

/** The cookie's value in a request, if it carries one. */
function cookieValue(req: FastifyRequest, name: string): string | undefined {
  for (const pair of (req.headers.cookie ?? "").split(";")) {
    const eq = pair.indexOf("=");
    if (eq > 0 && pair.slice(0, eq).trim() === name) return pair.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * True when the request carries a live console session. A request that changes something
 * must also carry `CONSOLE_HEADER` (see there), else the cookie does not count.
 */
export function hasConsoleSession(req: FastifyRequest, plane: ControlPlane): boolean {
  const value = cookieValue(req, consoleCookie(req.socket.localPort ?? 0));
  if (!value || !plane.consoleSessions.verify(value)) return false;
  return ["GET", "HEAD"].includes(req.method) || req.headers[CONSOLE_HEADER] === "1";
}

/** The console's own paths that need no session: the login link. */
export const isConsoleLogin = (url: string) =>
  url === CONSOLE_LOGIN_PATH || url.startsWith(`${CONSOLE_LOGIN_PATH}?`);

export const isConsolePath = (url: string) =>
  url === "/console" || url.startsWith(CONSOLE_PATH) || url.startsWith("/console?");

/** What a browser without a session sees: how to get one. */
export function refuseConsole(reply: FastifyReply, why: string): FastifyReply {
  return reply
    .code(401)
    .headers(PAGE_HEADERS)
    .header("cache-control", "no-store")
    .type("text/html; charset=utf-8")
    .send(
      `<!doctype html><meta charset="utf-8"><title>caravan console</title><body style="font-family:system-ui;max-width:40em;margin:3em auto"><h1>Not logged in</h1><p>${why}</p><p>Run <code>npx caravan console</code> for a new login link (it works once, for 5 minutes).</p></body>`,
    );
}

/** The scope the console opens on (names only: anything else is dropped). */
function scopeQuery(q: { project?: string; domain?: string }): string {
  const ok = (v?: string) => typeof v === "string" && v.length <= 63 && NAME_PATTERN.test(v);
  return ok(q.project) && ok(q.domain)
    ? `?${new URLSearchParams({ project: q.project!, domain: q.domain! })}`
    : "";
}

/** Registers the console's pages, assets and login on the API server. */
export function registerConsole(
  app: FastifyInstance,
  plane: ControlPlane,
  dir = consoleAssetsDir(),
): void {
  const assets = dir ? loadAssets(dir) : new Map<string, Asset>();

  app.get("/console", async (_req, reply) => reply.redirect(CONSOLE_PATH, 302));

  // The link's code is spent here, whatever happens next; the session is a cookie only this
  // API's path sees, never readable by script, never sent by another site's page.
  app.get<{ Querystring: { code?: string; project?: string; domain?: string } }>(
    CONSOLE_LOGIN_PATH,
    async (req, reply) => {
      const session =
        typeof req.query.code === "string" && plane.consoleSessions.redeem(req.query.code);
      if (!session) return refuseConsole(reply, "This login link was already used, or it expired.");
      const cookie = `${consoleCookie(req.socket.localPort ?? 0)}=${session}; HttpOnly; SameSite=Strict; Path=${CONSOLE_PATH}; Max-Age=${SESSION_MAX_AGE_S}`;
      return reply
        .code(303)
        .headers(PAGE_HEADERS)
        .header("set-cookie", cookie)
        .header("cache-control", "no-store")
        .redirect(`${CONSOLE_PATH}${scopeQuery(req.query)}`, 303);
    },
  );

  app.get<{ Params: { "*": string } }>(`${CONSOLE_PATH}*`, async (req, reply) => {
    if (!assets.size)
      return reply
        .code(404)
        .type("text/plain; charset=utf-8")
        .send("the console was not built: run npm run build in caravan's package");
    const path = req.params["*"];
    // Anything that is not a file is a view of the single-page app: its index.
    const asset =
      assets.get(path) ?? (path.startsWith("assets/") ? undefined : assets.get("index.html"));
    if (!asset) return reply.code(404).type("text/plain; charset=utf-8").send("no such file");
    return reply
      .headers(PAGE_HEADERS)
      .header("cache-control", asset.immutable ? "public, max-age=31536000, immutable" : "no-cache")
      .type(asset.type)
      .send(asset.body);
  });
}
