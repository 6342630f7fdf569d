/**
 * Issue 12, DESIGN §9: the data plane outlives the control plane. The gateway is a process of
 * its own; apps' endpoints keep answering while the control plane is killed, stopped with
 * --keep-apps, restarted or replaced by another copy of caravan, and a new control plane
 * adopts the gateway and the apps (same pids, same ports). Each test keeps a few keep-alive
 * clients sending requests to an app's public (with a token) and internal endpoints the whole
 * time and counts the failures.
 */
import { execFile } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { Agent, request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { describe, expect, it } from "vitest";
import { helloAt, socketPath } from "../src/backends/local/gateway-process/protocol.ts";
import { TokenStore } from "../src/backends/local/tokens.ts";
import { ROOT, eventually, type CliResult, type Sandbox, useSandbox } from "./helpers.ts";
import { deploy, fixture, get, status } from "./support.ts";

const AUTH = fixture("gateway/auth.ts");
const SCALING = fixture("gateway/scaling.ts");

const lastLine = (out: string) => out.trimEnd().split("\n").at(-1)!.trim();

/** A request loop: `clients` keep-alive connections each sending one request after another. */
function traffic(targets: { url: string; headers?: Record<string, string> }[], clients = 4) {
  let running = true;
  let ok = 0;
  const failures: { at: number; why: string }[] = [];
  const one = (agent: Agent, t: (typeof targets)[number]) =>
    new Promise<void>((resolve) => {
      const req = request(t.url, { agent, headers: t.headers }, (res) => {
        res.resume();
        res.on("end", () => {
          if (res.statusCode === 200) ok++;
          else failures.push({ at: Date.now(), why: `status ${res.statusCode}` });
          resolve();
        });
        res.on("error", (e) => {
          failures.push({ at: Date.now(), why: e.message });
          resolve();
        });
      });
      req.on("error", (e) => {
        failures.push({ at: Date.now(), why: e.message });
        resolve();
      });
      req.setTimeout(10_000, () => req.destroy(new Error("timed out")));
      req.end();
    });
  const loops = Array.from({ length: clients }, async (_, c) => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 });
    for (let i = c; running; i++) await one(agent, targets[i % targets.length]!);
    agent.destroy();
  });
  return {
    get ok() {
      return ok;
    },
    failures,
    /** Waits until `n` more requests have succeeded (the loop is bounded by count, not time). */
    async more(n = 200) {
      const target = ok + n;
      await eventually(() => ok >= target || failures.length > 1000, 60_000, 10);
    },
    async stop() {
      running = false;
      await Promise.all(loops);
      return { ok, failed: failures.length, failures };
    },
  };
}

/** The live processes of this home running `what` (the gateway's or the daemon's entry). */
function processesRunning(sb: Sandbox, what: string): number[] {
  return sb.processes().filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "latin1").includes(what);
    } catch {
      return false;
    }
  });
}
/** The gateway's primary (what the control plane records and adopts), or its workers. */
const gatewayPids = (sb: Sandbox, workers = false) =>
  processesRunning(sb, "gateway-process/main.js").filter((pid) => {
    try {
      const env = readFileSync(`/proc/${pid}/environ`, "latin1").split("\0");
      return env.includes("CARAVAN_GATEWAY_WORKER=1") === workers;
    } catch {
      return false; // gone meanwhile
    }
  });
/** Its standby workers (one stands by for a single worker; it is among `gatewayPids(sb, true)`). */
const standbyPids = (sb: Sandbox) =>
  gatewayPids(sb, true).filter((pid) => {
    try {
      return readFileSync(`/proc/${pid}/environ`, "latin1").includes("CARAVAN_GATEWAY_STANDBY=1");
    } catch {
      return false;
    }
  });
/** Its worker processes, once all are up: `count` workers, and a standby for a single one. */
const allWorkers = (sb: Sandbox, count: number) =>
  eventually(() => {
    const pids = gatewayPids(sb, true);
    return pids.length === count + (count === 1 ? 1 : 0) ? pids : undefined;
  });

/** The gateway's pid the control plane recorded (the one it adopted or started). */
function recordedGateway(sb: Sandbox): number | undefined {
  const db = new Database(join(sb.home, "state.db"), { readonly: true });
  try {
    const row = db.prepare("SELECT value FROM meta WHERE key = 'gateway-process'").get() as
      { value: string } | undefined;
    return row ? (JSON.parse(row.value) as { pid: number }).pid : undefined;
  } finally {
    db.close();
  }
}
const daemonPid = (sb: Sandbox) =>
  (JSON.parse(readFileSync(join(sb.home, "daemon.json"), "utf8")) as { pid: number }).pid;

/** Deploys guarded + open, makes a token, and returns the endpoints to load. */
async function deployed(sb: Sandbox) {
  const r = await deploy(sb, [AUTH]);
  expect(r.code, r.stderr).toBe(0);
  const created = await sb.run(["token", "create", "--name", "load"]);
  expect(created.code, created.stderr).toBe(0);
  const token = lastLine(created.stdout);
  const guarded = r.by.guarded!;
  const targets = [
    { url: `${guarded.endpoint}/`, headers: { authorization: `Bearer ${token}` } },
    { url: `${guarded.internalEndpoint}/` },
    { url: `${r.by.open!.endpoint}/` },
  ];
  const before = await status(sb);
  expect(gatewayPids(sb)).toHaveLength(1);
  return { token, guarded, targets, before, gateway: gatewayPids(sb)[0]! };
}

/** What a new control plane must show: the same apps, processes, endpoints and gateway. */
async function expectAdopted(
  sb: Sandbox,
  before: Awaited<ReturnType<typeof status>>,
  gateway: number,
) {
  const after = await status(sb);
  for (const name of ["guarded", "open"]) {
    expect(after[name]!.state).toBe("ready");
    expect(after[name]!.pids).toEqual(before[name]!.pids);
    expect(after[name]!.endpoint).toBe(before[name]!.endpoint);
    expect(after[name]!.internalEndpoint).toBe(before[name]!.internalEndpoint);
  }
  expect(gatewayPids(sb)).toEqual([gateway]);
}

describe("the data plane outlives the control plane", () => {
  const sb = useSandbox();

  it("keeps answering through a SIGKILL of the control plane; the next command adopts the gateway and the apps", async () => {
    const { targets, before, gateway } = await deployed(sb);
    const load = traffic(targets);
    await load.more();
    const old = daemonPid(sb);
    process.kill(old, "SIGKILL");
    await eventually(() => !sb.processes().includes(old));
    await load.more();
    // The next command starts a new control plane, which adopts what runs.
    await expectAdopted(sb, before, gateway);
    expect(daemonPid(sb)).not.toBe(old);
    await load.more();
    // The traffic figures come from the gateway, which kept counting.
    const traffic2 = (await status(sb)).guarded as unknown as { traffic?: { requests: number } };
    expect(traffic2.traffic?.requests ?? 0).toBeGreaterThan(0);
    const result = await load.stop();
    expect(result.failures).toEqual([]);
    expect(result.ok).toBeGreaterThan(600);
  });

  it("keeps answering through server stop --keep-apps and server start", async () => {
    const { targets, before, gateway } = await deployed(sb);
    const load = traffic(targets);
    await load.more();
    const stopped = await sb.run(["server", "stop", "--keep-apps"]);
    expect(stopped.code, stopped.stderr).toBe(0);
    await load.more();
    const started = await sb.run(["server", "start"]);
    expect(started.code, started.stderr).toBe(0);
    await expectAdopted(sb, before, gateway);
    await load.more();
    const result = await load.stop();
    expect(result.failures).toEqual([]);
  });

  it("keeps answering while another copy of caravan (a newer version) takes over", async () => {
    const { targets, before, gateway } = await deployed(sb);
    // A second install of the package beside this one, with a bumped version, sharing the
    // dependencies.
    const copy = mkdtempSync(join(tmpdir(), "caravan-upgrade-"));
    try {
      cpSync(join(ROOT, "dist"), join(copy, "dist"), { recursive: true });
      cpSync(join(ROOT, "bin"), join(copy, "bin"), { recursive: true });
      const pkg = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
        version: string;
      };
      writeFileSync(join(copy, "package.json"), JSON.stringify({ ...pkg, version: "99.0.0" }));
      symlinkSync(join(ROOT, "node_modules"), join(copy, "node_modules"));
      const load = traffic(targets);
      await load.more();
      const stopped = await sb.run(["server", "stop", "--keep-apps"]);
      expect(stopped.code, stopped.stderr).toBe(0);
      await load.more();
      const newer = await runCopy(sb, join(copy, "bin/caravan.js"), ["server", "start"]);
      expect(newer.code, newer.stderr).toBe(0);
      expect(readFileSync(`/proc/${daemonPid(sb)}/cmdline`, "latin1")).toContain(copy);
      await expectAdopted(sb, before, gateway);
      await load.more();
      const result = await load.stop();
      expect(result.failures).toEqual([]);
      await sb.run(["server", "stop"]);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  // Two orphans elect one of them; one (the default on two cores) elects itself.
  it.each([2, 1])(
    "serves on through a SIGKILL of the gateway's primary (%i workers): its workers spawn a successor on the same sockets, which the control plane adopts",
    async (count) => {
      sb.env.CARAVAN_GATEWAY_WORKERS = String(count);
      const { targets, before, gateway } = await deployed(sb);
      const orphans = await allWorkers(sb, count);
      const load = traffic(targets);
      await load.more();
      const killedAt = Date.now();
      process.kill(gateway, "SIGKILL");
      // A successor answers on the channel socket...
      const path = socketPath(sb.home);
      const successor = await eventually(
        async () => {
          const hello = await helloAt(path);
          return hello && hello.pid !== gateway ? hello : undefined;
        },
        30_000,
        10,
      );
      const answeredMs = Date.now() - killedAt;
      // ...the orphaned workers retire...
      await eventually(() => orphans.every((pid) => !sb.processes().includes(pid)), 30_000);
      await load.more();
      // ...and the control plane adopts it (it spawns no gateway of its own).
      await eventually(() => recordedGateway(sb) === successor.pid, 30_000);
      const result = await load.stop();
      console.log(
        `gateway primary SIGKILL (${count} workers): ${result.failed} failed of ${result.ok + result.failed} requests (${[...new Set(result.failures.map((f) => f.why))].join(", ") || "none"}); its successor answered the channel ${answeredMs} ms after the kill`,
      );
      // Nothing was refused, and the primary carried no request: nothing was lost. (On a
      // failure: when, after the kill, and what the gateway's processes said.)
      const when = result.failures.map((f) => `${f.at - killedAt} ms: ${f.why}`).join("; ");
      const said = readFileSync(join(sb.home, "gateway.log"), "utf8");
      expect(result.failures, `${when}\n${said}`).toEqual([]);
      expect(gatewayPids(sb)).toEqual([successor.pid]);
      const workers = await allWorkers(sb, count);
      expect(workers.filter((pid) => orphans.includes(pid))).toEqual([]);
      const after = await status(sb);
      for (const name of ["guarded", "open"]) {
        expect(after[name]!.endpoint).toBe(before[name]!.endpoint);
        expect(after[name]!.internalEndpoint).toBe(before[name]!.internalEndpoint);
        expect(after[name]!.pids).toEqual(before[name]!.pids);
      }
      for (const t of targets)
        expect((await fetch(t.url, { headers: t.headers })).status).toBe(200);
    },
  );

  it("hands over to a gateway of a newer protocol without a failed request", async () => {
    const { targets, before, gateway } = await deployed(sb);
    const oldWorkers = gatewayPids(sb, true);
    // A second install whose gateway protocol is newer than this one's.
    const copy = mkdtempSync(join(tmpdir(), "caravan-handover-"));
    try {
      cpSync(join(ROOT, "dist"), join(copy, "dist"), { recursive: true });
      cpSync(join(ROOT, "bin"), join(copy, "bin"), { recursive: true });
      cpSync(join(ROOT, "package.json"), join(copy, "package.json"));
      symlinkSync(join(ROOT, "node_modules"), join(copy, "node_modules"));
      const protocolJs = join(copy, "dist/backends/local/gateway-process/protocol.js");
      const source = readFileSync(protocolJs, "utf8");
      const bumped = source.replace(
        /export const PROTOCOL = (\d+);/,
        (_, n) => `export const PROTOCOL = ${Number(n) + 1};`,
      );
      expect(bumped).not.toBe(source);
      writeFileSync(protocolJs, bumped);
      const load = traffic(targets);
      await load.more();
      const stopped = await sb.run(["server", "stop", "--keep-apps"]);
      expect(stopped.code, stopped.stderr).toBe(0);
      const newer = await runCopy(sb, join(copy, "bin/caravan.js"), ["server", "start"]);
      expect(newer.code, newer.stderr).toBe(0);
      // The newer gateway serves, the old one and its workers are gone.
      const [successor] = await eventually(() => {
        const pids = gatewayPids(sb);
        return pids.length === 1 && pids[0] !== gateway ? pids : undefined;
      }, 30_000);
      expect(readFileSync(`/proc/${successor}/cmdline`, "latin1")).toContain(copy);
      await eventually(() => oldWorkers.every((pid) => !sb.processes().includes(pid)), 30_000);
      await load.more();
      const result = await load.stop();
      console.log(
        `gateway handover: ${result.failed} failed of ${result.ok + result.failed} requests`,
      );
      expect(result.failures).toEqual([]);
      expect(recordedGateway(sb)).toBe(successor);
      const after = await runCopy(sb, join(copy, "bin/caravan.js"), ["status", "--json"]);
      expect(after.code, after.stderr).toBe(0);
      for (const t of targets)
        expect((await fetch(t.url, { headers: t.headers })).status).toBe(200);
      expect((await status(sb)).guarded!.pids).toEqual(before.guarded!.pids);
      await runCopy(sb, join(copy, "bin/caravan.js"), ["server", "stop"]);
    } finally {
      rmSync(copy, { recursive: true, force: true });
    }
  });

  // Two workers: the other keeps accepting. One (the default on two cores): its standby does.
  it.each([2, 1])(
    "loses only what was in flight on a gateway worker that is SIGKILLed (%i workers): nothing is refused",
    async (count) => {
      sb.env.CARAVAN_GATEWAY_WORKERS = String(count);
      const { targets, before, gateway } = await deployed(sb);
      const workers = await allWorkers(sb, count);
      const standby = standbyPids(sb);
      expect(standby).toHaveLength(count === 1 ? 1 : 0);
      const victim = workers.find((pid) => !standby.includes(pid))!;
      const said = () => readFileSync(join(sb.home, "gateway.log"), "utf8");
      // Given the whole state (and so the sockets) before the kill.
      if (count === 1) await eventually(() => said().includes(`standby ${standby[0]} synced`));
      const clients = 4;
      const load = traffic(targets, clients);
      await load.more();
      const killed = Date.now();
      process.kill(victim, "SIGKILL");
      // A request on a new connection, sent right after the kill, is answered (not refused).
      const fresh = await fetch(targets[1]!.url, { headers: { connection: "close" } });
      expect(fresh.status).toBe(200);
      const answeredMs = Date.now() - killed;
      // One worker: its standby accepts at once (without it, new connections waited ~0.3 s
      // for a new process). Then a new worker (or standby) takes its place; the primary (and
      // so the adopted gateway) is the same.
      if (count === 1) {
        await eventually(() => said().includes(`its standby ${standby[0]} accepts`));
        expect(said()).toMatch(
          new RegExp(`gateway worker ${standby[0]}\\] \\S+ accepting on 4 sockets`),
        );
      }
      await eventually(() => {
        const now = gatewayPids(sb, true);
        return now.length === workers.length && !now.includes(victim);
      });
      await load.more();
      const result = await load.stop();
      console.log(
        `gateway worker SIGKILL (${count} workers): ${result.failed} failed requests of ${result.ok + result.failed} (${[...new Set(result.failures.map((f) => f.why))].join(", ")}); a new connection answered ${answeredMs} ms after the kill`,
      );
      // At most one per connection that worker had: each client keeps one to each endpoint, and
      // loses at most the request it had on it. No request was refused or answered with an error.
      expect(result.failed).toBeLessThanOrEqual(clients * targets.length);
      expect(result.failures.filter((f) => /status|ECONNREFUSED/.test(f.why))).toEqual([]);
      expect(gatewayPids(sb)).toEqual([gateway]);
      const after = await status(sb);
      expect(after.guarded!.pids).toEqual(before.guarded!.pids);
    },
  );

  it("stops honouring a revoked token while the control plane is down", async () => {
    const { token, guarded } = await deployed(sb);
    const withToken = () =>
      fetch(`${guarded.endpoint}/`, { headers: { authorization: `Bearer ${token}` } }).then(
        (r) => r.status,
      );
    expect(await withToken()).toBe(200);
    process.kill(daemonPid(sb), "SIGKILL");
    // Revoked in the store's database, as any caravan process holding it would.
    const db = new Database(join(sb.home, "state.db"));
    db.pragma("busy_timeout = 5000");
    try {
      expect(new TokenStore(db).revoke("load")).toBe(true);
    } finally {
      db.close();
    }
    const revokedAt = Date.now();
    await eventually(async () => (await withToken()) === 401, 10_000, 20);
    console.log(`revoked token refused ${Date.now() - revokedAt} ms after the revocation`);
    // The internal endpoint needs none.
    expect((await get(`${guarded.internalEndpoint}/`)).status).toBe(200);
    // A control plane again, which stops everything when the test ends.
    expect((await status(sb)).guarded!.state).toBe("ready");
  });

  it("answers 503 saying so when a scaled-to-zero app is woken while the control plane is down", async () => {
    const r = await deploy(sb, [SCALING, "sleepy"]);
    expect(r.code, r.stderr).toBe(0);
    const url = `${r.by.sleepy!.endpoint}/`;
    expect((await get(url)).status).toBe(200);
    await eventually(async () => (await status(sb)).sleepy!.pids.length === 0);
    const old = daemonPid(sb);
    process.kill(old, "SIGKILL");
    await eventually(() => !sb.processes().includes(old));
    const refused = await get(url);
    expect(refused.status).toBe(503);
    expect(refused.body).toContain("the control plane is not running");
    // A control plane again (any command starts one): the next request wakes the app.
    expect((await status(sb)).sleepy!.state).toBe("ready");
    const woken = await get(url);
    expect(woken).toMatchObject({ status: 200 });
    expect(woken.body).toMatch(/^awake /);
  });
});

/** `caravan <args>` of another install, in the sandbox's home. */
function runCopy(sb: Sandbox, bin: string, args: string[]): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [bin, ...args],
      { env: sb.env, timeout: 90_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === "number" ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}
