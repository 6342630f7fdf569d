/**
 * Issue 6, end to end through the CLI and real processes: the gateway in front of every app
 * (auth on the public endpoint, stable endpoints, balancing over replicas, autoscaling and
 * scale to zero, zero-downtime redeploys, request timeouts, streaming pass-through, metrics).
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import WebSocket from "ws";
import { eventually, type Sandbox, useSandbox } from "./helpers.ts";
import { appProcesses, deploy, fixture, get, json, status, type StatusJSON } from "./support.ts";

const AUTH = fixture("gateway/auth.ts");
const VERSIONED = fixture("gateway/versioned.ts");
const SCALING = fixture("gateway/scaling.ts");
const STREAMS = fixture("gateway/streams.ts");

/** What `status --json` says about an app's replicas and traffic (beyond StatusJSON). */
type AppStatus = StatusJSON & {
  replicas?: number;
  traffic?: { requests: number; errors: number; p50Ms: number; p99Ms: number };
};

async function appStatus(sb: Sandbox, name: string): Promise<AppStatus> {
  const s = (await status(sb))[name];
  if (!s) throw new Error(`${name} is not in caravan status`);
  return s as AppStatus;
}

const lastLine = (out: string) => out.trimEnd().split("\n").at(-1)!.trim();

/** A request that may take a while (held, slow or queued while the app wakes); errors are status 0. */
async function request(
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; body: string; headers: Headers }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(30_000), ...init });
    return { status: res.status, body: await res.text(), headers: res.headers };
  } catch (e) {
    return { status: 0, body: String(e), headers: new Headers() };
  }
}

/** The control plane's URL and bearer token, as the CLI finds them. */
function controlPlane(sb: Sandbox): { url: string; token: string } {
  const { url } = JSON.parse(readFileSync(join(sb.home, "daemon.json"), "utf8")) as {
    url: string;
  };
  return { url, token: readFileSync(join(sb.home, "token"), "utf8").trim() };
}

describe("the gateway", () => {
  const sb = useSandbox();

  it("asks for a token or a session on the public endpoint of an app that requires auth, never on the internal one", async () => {
    const r = await deploy(sb, [AUTH]);
    expect(r.code, r.stderr).toBe(0);
    const guarded = r.by.guarded!;
    const open = r.by.open!;
    expect(guarded.endpoint).not.toBe(guarded.internalEndpoint);

    const anonymous = await get(`${guarded.endpoint}/`);
    expect(anonymous.status).toBe(401);
    expect(anonymous.body).toContain("caravan token create");

    const created = await sb.run(["token", "create", "--name", "ci"]);
    expect(created.code, created.stderr).toBe(0);
    const token = lastLine(created.stdout);
    expect(token.length).toBeGreaterThan(16);
    const bearer = { headers: { authorization: `Bearer ${token}` } };
    expect(await request(`${guarded.endpoint}/`, bearer)).toMatchObject({
      status: 200,
      body: "guarded",
    });
    expect(
      await request(`${guarded.endpoint}/`, { headers: { authorization: "Bearer nope" } }),
    ).toMatchObject({ status: 401 });

    const listed = await sb.run(["token", "list", "--json"]);
    expect(listed.code, listed.stderr).toBe(0);
    const { tokens } = json<{ tokens: { name: string; revoked: boolean }[] }>(listed);
    expect(tokens.map((t) => [t.name, t.revoked])).toEqual([["ci", false]]);
    expect(listed.stdout).not.toContain(token);

    const revoked = await sb.run(["token", "revoke", "ci"]);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(await request(`${guarded.endpoint}/`, bearer)).toMatchObject({ status: 401 });

    // The internal endpoint (app-to-app calls) never asks; an app without requiresAuth neither.
    expect(await get(`${guarded.internalEndpoint}/`)).toEqual({ status: 200, body: "guarded" });
    expect(await get(`${open.endpoint}/`)).toEqual({ status: 200, body: "open" });

    // A login link trades its one-time code for a session cookie.
    const link = await sb.run(["token", "link", "guarded"]);
    expect(link.code, link.stderr).toBe(0);
    const url = lastLine(link.stdout);
    expect(url.startsWith(`${guarded.endpoint}/_caravan/login?code=`), url).toBe(true);
    const login = await request(url, { redirect: "manual" });
    expect(login.status).toBe(302);
    const setCookie = login.headers.get("set-cookie") ?? "";
    // Named per app: its public port.
    const port = new URL(guarded.endpoint!).port;
    const cookie = new RegExp(`^(caravan_session_${port}=[^;]+)`).exec(setCookie)?.[1];
    expect(cookie, setCookie).toBeDefined();
    expect(await request(`${guarded.endpoint}/`, { headers: { cookie: cookie! } })).toMatchObject({
      status: 200,
      body: "guarded",
    });
    // The link works once.
    expect(await request(url, { redirect: "manual" })).toMatchObject({ status: 401 });
  });

  it("keeps both endpoints across a redeploy, a crash restart and a control plane restart", async () => {
    const first = await deploy(sb, [VERSIONED]);
    expect(first.code, first.stderr).toBe(0);
    const { endpoint, internalEndpoint } = first.by.versioned!;
    const same = (s: AppStatus) => {
      expect(s.endpoint).toBe(endpoint);
      expect(s.internalEndpoint).toBe(internalEndpoint);
    };
    const v1 = await appStatus(sb, "versioned");
    same(v1);
    expect(await get(`${endpoint}/pid`)).toEqual({ status: 200, body: `v1 ${v1.pids[0]}` });

    // A changed revision.
    const second = await deploy(sb, [VERSIONED], { GW_REVISION: "v2" });
    expect(second.code, second.stderr).toBe(0);
    expect(second.by.versioned).toMatchObject({ status: "ready", endpoint, internalEndpoint });
    expect(second.by.versioned!.revision).not.toBe(first.by.versioned!.revision);
    const v2 = await appStatus(sb, "versioned");
    same(v2);
    expect(v2.pids).toHaveLength(1);
    expect(v2.pids[0]).not.toBe(v1.pids[0]);
    expect(await get(`${endpoint}/pid`)).toEqual({ status: 200, body: `v2 ${v2.pids[0]}` });
    expect(await get(`${internalEndpoint}/pid`)).toEqual({ status: 200, body: `v2 ${v2.pids[0]}` });

    // A crash: the replica is restarted behind the same endpoints.
    process.kill(v2.pids[0]!, "SIGKILL");
    const restarted = await eventually(async () => {
      const s = await appStatus(sb, "versioned");
      return s.state === "ready" && s.pids.length === 1 && s.pids[0] !== v2.pids[0] ? s : undefined;
    });
    same(restarted);
    expect(await get(`${endpoint}/pid`)).toEqual({ status: 200, body: `v2 ${restarted.pids[0]}` });

    // The control plane (and its gateway) restarts; the next one adopts the replica and
    // listens on the same endpoints again.
    const stop = await sb.run(["server", "stop", "--keep-apps"]);
    expect(stop.code, stop.stderr).toBe(0);
    const adopted = await appStatus(sb, "versioned");
    same(adopted);
    expect(adopted.pids).toEqual(restarted.pids);
    expect(await get(`${endpoint}/pid`)).toEqual({ status: 200, body: `v2 ${restarted.pids[0]}` });
    expect(await get(`${internalEndpoint}/`)).toEqual({ status: 200, body: "v2" });
  });

  it("spreads requests over the replicas", async () => {
    const r = await deploy(sb, [SCALING, "spread"]);
    expect(r.code, r.stderr).toBe(0);
    const s = await appStatus(sb, "spread");
    expect(s.replicas).toBe(3);
    expect(new Set(s.pids).size).toBe(3);
    expect(appProcesses(sb, "spread").sort()).toEqual([...s.pids].sort());

    const seen: string[] = [];
    for (let i = 0; i < 30; i++) {
      const res = await get(`${r.by.spread!.endpoint}/`);
      expect(res.status).toBe(200);
      seen.push(res.body);
    }
    expect([...new Set(seen)].sort()).toEqual(s.pids.map(String).sort());
  });

  it("scales out under concurrent load and back in once idle", async () => {
    const release = join(sb.home, "release");
    const r = await deploy(sb, [SCALING, "elastic"], { RELEASE_FILE: release });
    expect(r.code, r.stderr).toBe(0);
    const endpoint = r.by.elastic!.endpoint!;
    const before = await appStatus(sb, "elastic");
    expect(before.replicas).toBe(1);
    expect(before.pids).toHaveLength(1);

    // Six requests held open, one request per replica wanted: more replicas come.
    const held = Array.from({ length: 6 }, () => request(`${endpoint}/hold`));
    const out = await eventually(async () => {
      const s = await appStatus(sb, "elastic");
      return (s.replicas ?? 0) > 1 ? s : undefined;
    });
    expect(out.replicas).toBeLessThanOrEqual(3);
    expect(out.pids.length).toBe(out.replicas);

    writeFileSync(release, "");
    const answers = await Promise.all(held);
    expect(answers.map((a) => a.status)).toEqual([200, 200, 200, 200, 200, 200]);

    // Idle: back to the minimum, one replica.
    const back = await eventually(async () => {
      const s = await appStatus(sb, "elastic");
      return s.replicas === 1 && s.pids.length === 1 ? s : undefined;
    });
    await eventually(() => appProcesses(sb, "elastic").length === 1);
    expect(appProcesses(sb, "elastic")).toEqual(back.pids);
    expect(await get(`${endpoint}/`)).toEqual({ status: 200, body: String(back.pids[0]) });
  });

  it("scales an idle app to zero and wakes it with the next request", async () => {
    const r = await deploy(sb, [SCALING, "sleepy"]);
    expect(r.code, r.stderr).toBe(0);
    const endpoint = r.by.sleepy!.endpoint!;

    const asleep = await eventually(async () => {
      const s = await appStatus(sb, "sleepy");
      return s.replicas === 0 && s.pids.length === 0 ? s : undefined;
    });
    expect(asleep.endpoint).toBe(endpoint);
    await eventually(() => appProcesses(sb, "sleepy").length === 0);

    // Three requests arrive at an app with no process: all are answered, by one. The app
    // answers them together once all three wait in it, so they keep it busy until the last
    // arrived however slow this machine is (a second process would wait forever: 30 s, 0).
    const woken = await Promise.all([1, 2, 3].map(() => request(`${endpoint}/gather?n=3`)));
    expect(woken.map((w) => w.status)).toEqual([200, 200, 200]);
    // One process answered all three. (Status may already show it asleep again: it scales
    // to zero after a second idle, which a slow `caravan status` can outlast.)
    const bodies = new Set(woken.map((w) => w.body));
    expect(bodies.size).toBe(1);
    expect([...bodies][0]).toMatch(/^awake \d+$/);
    const s = await appStatus(sb, "sleepy");
    expect(s.replicas).toBeLessThanOrEqual(1);
    expect(s.traffic?.errors).toBe(0);
  });

  it("redeploys under continuous load without failing a request", async () => {
    const up = { GW_UP_DIR: sb.home };
    const first = await deploy(sb, [VERSIONED], up);
    expect(first.code, first.stderr).toBe(0);
    const endpoint = first.by.versioned!.endpoint!;

    let deployed = false;
    let after = 0; // requests started once the deploy had returned
    const failures: string[] = [];
    const during = new Set<string>();
    const afterwards = new Set<string>();
    const loop = async () => {
      // Bounded by a count (100 requests after the deploy returned, across the loops), not time.
      while (after < 100) {
        const late = deployed;
        if (late) after++;
        const res = await request(`${endpoint}/peers`);
        if (res.status !== 200) failures.push(`${res.status} ${res.body}`);
        else (late ? afterwards : during).add(res.body);
      }
    };
    const loops = [loop(), loop(), loop(), loop()];
    await eventually(() => during.has("v1"));

    let second;
    try {
      second = await deploy(sb, [VERSIONED], { ...up, GW_REVISION: "v2" });
    } finally {
      deployed = true;
    }
    expect(second.code, second.stderr).toBe(0);
    expect(second.by.versioned!.status).toBe("ready");
    await Promise.all(loops);

    expect(failures).toEqual([]);
    // Both revisions answered, and they overlapped: the old one served while the new one
    // started, the new one served before the old one was gone (no request waited in a gap).
    expect(during).toContain("v1");
    expect(during).toContain("v1 while v2");
    expect(during).toContain("v2 while v1");
    // Once the deploy returned, only the new one.
    expect([...afterwards]).toEqual(["v2"]);
    const s = await appStatus(sb, "versioned");
    expect(s.traffic?.errors).toBe(0);
    expect(appProcesses(sb, "versioned")).toEqual(s.pids);
  });

  it("leaves the old revision serving when the new one fails to start", async () => {
    const first = await deploy(sb, [VERSIONED]);
    expect(first.code, first.stderr).toBe(0);
    const endpoint = first.by.versioned!.endpoint!;
    const old = await appStatus(sb, "versioned");
    expect(old.pids).toHaveLength(1);

    const broken = await deploy(sb, [VERSIONED], { GW_REVISION: "v2", GW_FAIL: "1" });
    expect(broken.code).toBe(1);
    expect(broken.by.versioned).toMatchObject({ status: "failed" });
    expect(broken.by.versioned!.error).toContain("refuses to start");

    expect(await get(`${endpoint}/pid`)).toEqual({ status: 200, body: `v1 ${old.pids[0]}` });
    const s = await appStatus(sb, "versioned");
    expect(s).toMatchObject({
      state: "ready",
      revision: first.by.versioned!.revision,
      pids: old.pids,
      endpoint,
    });
    expect(s.error).toContain("refuses to start");
    await eventually(() => appProcesses(sb, "versioned").length === 1);
    expect(appProcesses(sb, "versioned")).toEqual(old.pids);
  });

  it("answers 504 when the app takes longer than timeouts.request", async () => {
    const r = await deploy(sb, [STREAMS, "slow"]);
    expect(r.code, r.stderr).toBe(0);
    const endpoint = r.by.slow!.endpoint!;
    expect(await get(`${endpoint}/`)).toEqual({ status: 200, body: "fast" });
    const slow = await request(`${endpoint}/slow`);
    expect(slow.status).toBe(504);
    expect(slow.body).toContain("slow");
    // The app is fine afterwards.
    expect(await get(`${endpoint}/`)).toEqual({ status: 200, body: "fast" });
  });

  it("passes server-sent events through as they come", async () => {
    const r = await deploy(sb, [STREAMS, "sse"]);
    expect(r.code, r.stderr).toBe(0);
    const endpoint = r.by.sse!.endpoint!;

    // A gateway that buffered the stream would never show the first event: the app sends
    // the second (and ends) only when told to, after the test saw the first. The abort turns
    // that deadlock into a failure.
    const res = await fetch(`${endpoint}/events`, { signal: AbortSignal.timeout(15_000) });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let received = "";
    const readUntil = async (needle: string) => {
      try {
        while (!received.includes(needle)) {
          const { done, value } = await reader.read();
          if (done) break;
          received += decoder.decode(value, { stream: true });
        }
      } catch (e) {
        throw new Error(
          `no ${JSON.stringify(needle)} came through (got ${JSON.stringify(received)})`,
          {
            cause: e,
          },
        );
      }
      return received;
    };
    // The first event arrives while the app still holds the second back.
    expect(await readUntil("data: one\n\n")).toBe("data: one\n\n");
    expect(await get(`${endpoint}/go`)).toEqual({ status: 200, body: "went" });
    expect(await readUntil("data: two\n\n")).toBe("data: one\n\ndata: two\n\n");
    expect(await reader.read()).toMatchObject({ done: true });
  });

  it("carries a WebSocket both ways", async () => {
    const r = await deploy(sb, [STREAMS, "echo"]);
    expect(r.code, r.stderr).toBe(0);
    const url = r.by.echo!.endpoint!.replace(/^http/, "ws") + "/socket";
    const ws = new WebSocket(url);
    try {
      const messages: string[] = [];
      ws.on("message", (data) => messages.push(String(data)));
      await new Promise<void>((resolve, reject) => {
        ws.once("open", () => resolve());
        ws.once("error", reject);
      });
      ws.send("hello");
      await eventually(() => messages.length === 1);
      ws.send("again");
      await eventually(() => messages.length === 2);
      expect(messages).toEqual(["echo: hello", "echo: again"]);
    } finally {
      ws.close();
      await new Promise((resolve) => {
        if (ws.readyState === WebSocket.CLOSED) resolve(undefined);
        else ws.once("close", resolve);
      });
    }
  });

  it("counts traffic in /metrics and in caravan status", async () => {
    const r = await deploy(sb, [AUTH, "open"]);
    expect(r.code, r.stderr).toBe(0);
    for (let i = 0; i < 5; i++)
      expect(await get(`${r.by.open!.endpoint}/`)).toEqual({ status: 200, body: "open" });

    const plane = controlPlane(sb);
    const anonymous = await fetch(`${plane.url}/metrics`);
    expect(anonymous.status).toBe(401);
    await anonymous.text();
    const res = await fetch(`${plane.url}/metrics`, {
      headers: { authorization: `Bearer ${plane.token}` },
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    const ok = text
      .split("\n")
      .find((l) => /^caravan_gateway_requests_total\{app="[^"]*open",code="2xx"\} /.test(l));
    expect(ok, text).toBeDefined();
    expect(Number(ok!.split(" ").at(-1))).toBeGreaterThanOrEqual(5);

    const s = await appStatus(sb, "open");
    expect(s.traffic?.requests).toBeGreaterThanOrEqual(5);
    expect(s.traffic?.errors).toBe(0);
  });
});
