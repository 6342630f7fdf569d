/**
 * API tokens for the gateway's public side, one-time login codes and the browser sessions
 * they are redeemed for, in the control plane's SQLite database. Only SHA-256 hashes are
 * stored: the database never holds a usable credential.
 *
 * `verify` runs on every public request, so it answers from an in-memory cache of presented
 * value → validity (process memory only, cleared on create/revoke, bounded); on a miss it
 * looks the value's hash up in the database.
 */
import { randomBytes } from "node:crypto";
import type Database from "better-sqlite3";
import type { NewToken, TokenInfo } from "../contract.ts";
import {
  TOKEN_PREFIX,
  checkNameFree,
  checkTokenName,
  newTokenId as newId,
  newTokenValue,
  plausibleToken,
  tokenHash as sha256,
} from "../tokens.ts";

const SCHEMA = `
CREATE TABLE IF NOT EXISTS api_tokens (
  id TEXT PRIMARY KEY,
  kind TEXT NOT NULL,              -- 'api' (listed), 'session' (from a login code), 'login' (a code)
  name TEXT,
  hash TEXT NOT NULL UNIQUE,       -- sha256 hex of the secret
  created_at INTEGER NOT NULL,     -- ms epoch, like the two below
  expires_at INTEGER,
  last_used_at INTEGER,
  revoked_at INTEGER
);
-- A name belongs to one live API token; a revoked token's name may be used again.
CREATE UNIQUE INDEX IF NOT EXISTS api_tokens_live_name
  ON api_tokens (name) WHERE kind = 'api' AND revoked_at IS NULL;
`;

const SESSION_PREFIX = "cvs_";
/** A session's value (from a login code), not an API token (which would open every app). */
export const isSessionValue = (value: string) => value.startsWith(SESSION_PREFIX);
const SESSION_TTL_MS = 12 * 60 * 60 * 1000;
/** `last_used_at` is written at most this often per token: verify must not write per request. */
const LAST_USED_EVERY_MS = 60_000;
/** Bounds the cache against floods of made-up tokens. */
const CACHE_MAX = 10_000;

interface Cached {
  id: string;
  /** The app a session is for (undefined for an API token, good for every app). */
  app: string | undefined;
  valid: boolean;
  /** ms epoch; Infinity for API tokens. */
  expiresAt: number;
  usedWrittenAt: number;
  /** When the database was read for it (ms epoch). */
  readAt: number;
}

type Row = Record<string, any>;

export class TokenStore {
  private readonly cache = new Map<string, Cached>();
  private readonly stmts;
  private readonly redeemTx;

  /**
   * `cacheMs`: how long a verified value is trusted without asking the database again. Within
   * the process that revokes, a revocation clears the cache at once; the gateway process sees
   * another process's revocations only through the database, so it passes 1 s.
   */
  constructor(
    private readonly db: Database.Database,
    private readonly opts: { cacheMs?: number } = {},
  ) {
    db.exec(SCHEMA);
    this.stmts = {
      insert: db.prepare(
        "INSERT INTO api_tokens (id, kind, name, hash, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?)",
      ),
      byHash: db.prepare(
        "SELECT id, kind, name, expires_at, revoked_at FROM api_tokens WHERE hash = ? AND kind IN ('api', 'session')",
      ),
      liveName: db.prepare(
        "SELECT id FROM api_tokens WHERE kind = 'api' AND revoked_at IS NULL AND name = ?",
      ),
      list: db.prepare(
        "SELECT id, name, created_at, last_used_at, revoked_at FROM api_tokens WHERE kind = 'api' ORDER BY created_at, rowid",
      ),
      countApi: db.prepare("SELECT count(*) AS n FROM api_tokens WHERE kind = 'api'"),
      revokeId: db.prepare(
        "UPDATE api_tokens SET revoked_at = ? WHERE kind = 'api' AND revoked_at IS NULL AND id = ?",
      ),
      revokeName: db.prepare(
        "UPDATE api_tokens SET revoked_at = ? WHERE kind = 'api' AND revoked_at IS NULL AND name = ?",
      ),
      used: db.prepare("UPDATE api_tokens SET last_used_at = ? WHERE id = ?"),
      takeCode: db.prepare(
        "DELETE FROM api_tokens WHERE kind = 'login' AND hash = ? RETURNING expires_at, name",
      ),
      purge: db.prepare(
        "DELETE FROM api_tokens WHERE kind IN ('login', 'session') AND expires_at <= ?",
      ),
    };
    // Consuming the code and creating the session happen together or not at all.
    this.redeemTx = db.transaction((code: string, app: string, now: number) => {
      const row = this.stmts.takeCode.get(sha256(code)) as Row | undefined;
      // A code is for one app: on another app's endpoint it is spent and worth nothing.
      if (!row || row.expires_at <= now || row.name !== app) return undefined;
      const session = SESSION_PREFIX + randomBytes(32).toString("base64url");
      this.stmts.insert.run(newId(), "session", app, sha256(session), now, now + SESSION_TTL_MS);
      return session;
    });
  }

  /** A new API token; its value is returned here only (the store keeps its hash). */
  create(name?: string): NewToken {
    checkTokenName(name);
    const chosen = name ?? this.defaultName();
    checkNameFree(chosen, Boolean(this.stmts.liveName.get(chosen)));
    const id = newId();
    const token = newTokenValue();
    this.stmts.insert.run(id, "api", chosen, sha256(token), Date.now(), null);
    this.cache.clear();
    return { id, name: chosen, token };
  }

  /** API tokens, oldest first, revoked ones included (sessions and login codes are not listed). */
  list(): TokenInfo[] {
    return (this.stmts.list.all() as Row[]).map((r) => ({
      id: r.id,
      name: r.name,
      createdAt: new Date(r.created_at).toISOString(),
      ...(r.last_used_at != null && { lastUsedAt: new Date(r.last_used_at).toISOString() }),
      revoked: r.revoked_at != null,
    }));
  }

  /** Revokes the live API token with this id (or else this name); false when there is none. */
  revoke(idOrName: string): boolean {
    const now = Date.now();
    const changed =
      this.stmts.revokeId.run(now, idOrName).changes ||
      this.stmts.revokeName.run(now, idOrName).changes;
    this.cache.clear();
    return changed > 0;
  }

  /**
   * True for a live API token, or an unexpired session of `app` (a session from a login link
   * opens the one app the link was made for).
   */
  verify(token: string, app?: string): boolean {
    if (!plausibleToken(token, [TOKEN_PREFIX, SESSION_PREFIX])) return false;
    const now = Date.now();
    // Keyed by the value itself (kept in this process's memory only): a hit costs a map
    // lookup, not a SHA-256 per request. The database is asked by hash on a miss.
    let entry = this.cache.get(token);
    if (entry === undefined || now - entry.readAt > (this.opts.cacheMs ?? Infinity)) {
      const row = this.stmts.byHash.get(sha256(token)) as Row | undefined;
      entry = {
        id: row?.id ?? "",
        app: row?.kind === "session" ? (row.name as string) : undefined,
        valid: row !== undefined && row.revoked_at == null,
        expiresAt: row?.expires_at ?? Infinity,
        usedWrittenAt: entry?.usedWrittenAt ?? 0,
        readAt: now,
      };
      if (this.cache.size >= CACHE_MAX) this.cache.clear();
      this.cache.set(token, entry);
    }
    if (!entry.valid || now >= entry.expiresAt) return false;
    if (entry.app !== undefined && entry.app !== app) return false;
    if (now - entry.usedWrittenAt >= LAST_USED_EVERY_MS) {
      entry.usedWrittenAt = now;
      this.stmts.used.run(now, entry.id);
    }
    return true;
  }

  /** Verified values are checked in the database again (another process changed tokens). */
  forgetCached(): void {
    this.cache.clear();
  }

  /** Ends every session and login code of an app (it was deleted: a namesake is another app). */
  forgetApp(app: string): void {
    this.db
      .prepare("DELETE FROM api_tokens WHERE kind IN ('session', 'login') AND name = ?")
      .run(app);
    this.cache.clear();
  }

  /** A one-time code for a login link to `app` (`/_caravan/login?code=…`), valid for `ttlMs`. */
  loginCode(app: string, ttlMs = 60_000): string {
    const now = Date.now();
    this.stmts.purge.run(now);
    const code = randomBytes(24).toString("base64url");
    this.stmts.insert.run(newId(), "login", app, sha256(code), now, now + ttlMs);
    return code;
  }

  /**
   * Consumes a login code on `app`'s endpoint; returns a session value (valid 12 h, for that
   * app only) for a cookie, or undefined.
   */
  redeem(code: string, app: string): string | undefined {
    if (typeof code !== "string" || code.length === 0 || code.length > 200) return undefined;
    const now = Date.now();
    this.stmts.purge.run(now);
    return this.redeemTx(code, app, now);
  }

  private defaultName(): string {
    let n = (this.stmts.countApi.get() as Row).n + 1;
    while (this.stmts.liveName.get(`token-${n}`)) n++;
    return `token-${n}`;
  }
}
