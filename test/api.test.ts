/**
 * The control plane's HTTP API is bound to loopback and guarded by a bearer token that only
 * the owner can read ($CARAVAN_HOME/token, mode 0600). DESIGN §5: `server status --json`.
 */
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { useSandbox } from "./helpers.ts";
import { isRunning, json } from "./support.ts";

type ServerStatus = { running: boolean; pid: number | null; url: string | null };

async function call(url: string, init: RequestInit = {}) {
  const res = await fetch(url, init);
  return { status: res.status, body: (await res.json()) as Record<string, any> };
}

describe("the control plane API", () => {
  const sb = useSandbox();

  it("refuses requests without the right token and accepts the one from $CARAVAN_HOME/token", async () => {
    const started = await sb.run(["server", "start", "--json"]);
    expect(started.code, started.stderr).toBe(0);

    const r = await sb.run(["server", "status", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    const s = json<ServerStatus>(r);
    expect(Object.keys(s).sort()).toEqual(["pid", "running", "url"]);
    expect(s.running).toBe(true);
    expect(s.pid).toBe(json<ServerStatus>(started).pid);
    expect(isRunning(s.pid!)).toBe(true);
    expect(s.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const url = s.url!;

    const tokenFile = join(sb.home, "token");
    expect(statSync(tokenFile).mode & 0o777).toBe(0o600);
    const token = readFileSync(tokenFile, "utf8").trim();
    expect(token.length).toBeGreaterThanOrEqual(32);

    const wrongSameLength = token.slice(0, -1) + (token.endsWith("0") ? "1" : "0");
    const refused: [string, RequestInit][] = [
      [`${url}/v1/status`, {}],
      [`${url}/v1/status`, { headers: { authorization: "Bearer nope" } }],
      [`${url}/v1/status`, { headers: { authorization: `Bearer ${wrongSameLength}` } }],
      [`${url}/v1/status`, { headers: { authorization: token } }],
      [`${url}/v1/health`, {}],
      [
        `${url}/v1/shutdown`,
        { method: "POST", headers: { "content-type": "application/json" }, body: "{}" },
      ],
    ];
    for (const [target, init] of refused) {
      const res = await call(target, init);
      expect(res.status, `${target} ${JSON.stringify(init.headers)}`).toBe(401);
      expect(res.body.error.code).toBe("UNAUTHORIZED");
    }
    // The refused shutdown did nothing.
    expect(isRunning(s.pid!)).toBe(true);

    const ok = await call(`${url}/v1/status`, { headers: { authorization: `Bearer ${token}` } });
    expect(ok).toEqual({ status: 200, body: { environments: [] } });

    const stopped = await sb.run(["server", "stop"]);
    expect(stopped.code, stopped.stderr).toBe(0);
    expect(isRunning(s.pid!)).toBe(false);
    const after = await sb.run(["server", "status", "--json"]);
    expect(json<ServerStatus>(after)).toEqual({ running: false, pid: null, url: null });
  });
});
