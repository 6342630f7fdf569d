import Database from "better-sqlite3";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { isCaravanError } from "../../errors.ts";
import { TokenStore } from "./tokens.ts";

let db: Database.Database;
let store: TokenStore;

beforeEach(() => {
  db = new Database(":memory:");
  store = new TokenStore(db);
});
afterEach(() => {
  vi.useRealTimers();
  db.close();
});

describe("TokenStore", () => {
  it("sees a revocation made through another connection once its cache time has passed (the gateway process: 1 s)", () => {
    // Two connections to one database file, as the control plane and the gateway process have.
    const dir = mkdtempSync(join(tmpdir(), "caravan-tokens-"));
    const a = new Database(join(dir, "state.db"));
    const b = new Database(join(dir, "state.db"));
    try {
      vi.useFakeTimers({ toFake: ["Date"] });
      const control = new TokenStore(a);
      const gateway = new TokenStore(b, { cacheMs: 1000 });
      const { token } = control.create("ci");
      expect(gateway.verify(token)).toBe(true);
      expect(control.revoke("ci")).toBe(true);
      vi.advanceTimersByTime(1000);
      expect(gateway.verify(token)).toBe(true); // still the cached answer: within the 1 s
      vi.advanceTimersByTime(1);
      expect(gateway.verify(token)).toBe(false);
      // Told at once (the control plane's `tokens` message): no wait at all.
      const second = control.create("second");
      expect(gateway.verify(second.token)).toBe(true);
      control.revoke("second");
      gateway.forgetCached();
      expect(gateway.verify(second.token)).toBe(false);
    } finally {
      a.close();
      b.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("creates tokens that verify, and stores only their hash", () => {
    const { id, name, token } = store.create("ci");
    expect(name).toBe("ci");
    expect(token).toMatch(/^cvn_[A-Za-z0-9_-]{43}$/);
    expect(store.verify(token)).toBe(true);
    expect(store.verify(`${token}x`)).toBe(false);
    expect(store.verify("cvn_made-up-token-that-is-long-enough")).toBe(false);
    expect(store.verify("")).toBe(false);
    const rows = db.prepare("SELECT * FROM api_tokens").all() as Record<string, unknown>[];
    expect(rows).toHaveLength(1);
    expect(rows[0]!.id).toBe(id);
    expect(JSON.stringify(rows)).not.toContain(token.slice(4));
    expect(rows[0]!.hash).toMatch(/^[0-9a-f]{64}$/);
  });

  it("lists API tokens with their use, and revokes by id or name", () => {
    const a = store.create("a");
    const b = store.create();
    expect(b.name).toBe("token-2");
    expect(store.list().map((t) => [t.name, t.revoked, t.lastUsedAt])).toEqual([
      ["a", false, undefined],
      ["token-2", false, undefined],
    ]);
    expect(store.verify(a.token)).toBe(true);
    expect(store.list()[0]!.lastUsedAt).toMatch(/^\d{4}-\d\d-\d\dT/);

    expect(store.revoke("a")).toBe(true);
    expect(store.verify(a.token)).toBe(false); // the cache was invalidated
    expect(store.revoke(b.id)).toBe(true);
    expect(store.verify(b.token)).toBe(false);
    expect(store.revoke("a")).toBe(false);
    expect(store.revoke("unknown")).toBe(false);
    expect(store.list().map((t) => t.revoked)).toEqual([true, true]);
  });

  it("rejects a name in use (or malformed) with VALIDATION; a revoked name is free again", () => {
    store.create("ci");
    const err = (() => {
      try {
        store.create("ci");
      } catch (e) {
        return e;
      }
    })();
    expect(isCaravanError(err) && err.code).toBe("VALIDATION");
    expect((err as Error).message).toContain('"ci"');
    expect(() => store.create("no spaces")).toThrow(/invalid token name/);
    store.revoke("ci");
    expect(store.create("ci").name).toBe("ci");
  });

  it("survives a new store on the same database (the cache is only a cache)", () => {
    const { token } = store.create("x");
    expect(new TokenStore(db).verify(token)).toBe(true);
  });

  it("redeems a login code once, for a session that verifies and expires after 12 h", () => {
    vi.useFakeTimers({ now: new Date("2030-01-01T00:00:00Z"), toFake: ["Date"] });
    const code = store.loginCode("p/d/web");
    const session = store.redeem(code, "p/d/web");
    expect(session).toMatch(/^cvs_/);
    expect(store.verify(session!, "p/d/web")).toBe(true);
    // A session opens the app its link was for, no other.
    expect(store.verify(session!, "p/d/admin")).toBe(false);
    expect(store.redeem(code, "p/d/web")).toBeUndefined();
    // A code redeemed on another app's endpoint is spent and gives nothing.
    const other = store.loginCode("p/d/web");
    expect(store.redeem(other, "p/d/admin")).toBeUndefined();
    expect(store.redeem(other, "p/d/web")).toBeUndefined();
    expect(store.list()).toEqual([]); // sessions and codes are not API tokens
    expect(store.verify(code)).toBe(false); // a code is no credential by itself

    vi.setSystemTime(new Date("2030-01-01T11:59:00Z"));
    expect(store.verify(session!, "p/d/web")).toBe(true);
    vi.setSystemTime(new Date("2030-01-01T12:00:01Z"));
    expect(store.verify(session!, "p/d/web")).toBe(false);
  });

  it("ends an app's sessions and login codes when the app is forgotten", () => {
    const session = store.redeem(store.loginCode("p/d/web"), "p/d/web")!;
    const code = store.loginCode("p/d/web");
    const other = store.redeem(store.loginCode("p/d/api"), "p/d/api")!;
    expect(store.verify(session, "p/d/web")).toBe(true);
    store.forgetApp("p/d/web");
    expect(store.verify(session, "p/d/web")).toBe(false);
    expect(store.redeem(code, "p/d/web")).toBeUndefined();
    expect(store.verify(other, "p/d/api")).toBe(true);
  });

  it("refuses an expired login code", () => {
    vi.useFakeTimers({ now: new Date("2030-01-01T00:00:00Z"), toFake: ["Date"] });
    const code = store.loginCode("p/d/web", 1000);
    vi.setSystemTime(new Date("2030-01-01T00:00:02Z"));
    expect(store.redeem(code, "p/d/web")).toBeUndefined();
    expect(store.redeem("", "p/d/web")).toBeUndefined();
  });
});
