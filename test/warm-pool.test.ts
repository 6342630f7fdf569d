/**
 * Issue 15: the local control plane's pool of warm runtime processes. A JS app or task worker
 * started in a warm process cannot tell it from a cold start (inputs, env vars, argv, cwd,
 * secrets, where its output goes, what /proc shows, crash restarts); a warm process holds no
 * secret before it is assigned; one process never serves two apps; the pool can be turned off.
 */
import { spawn } from "node:child_process";
import { readFileSync, readlinkSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BIN, ROOT, eventually, type CliResult, type Sandbox, useSandbox } from "./helpers.ts";
import { processesWithHome } from "./processes.ts";
import { deploy, fixture, get, json, status, type StatusJSON } from "./support.ts";

const APPS = fixture("warm/apps.ts");
/** The same apps, in a project whose caravan.config.json says `warmPool: false`. */
const OFF = fixture("warm/off/apps.ts");
const SECRET = `warm-${Math.random().toString(36).slice(2)}-secret`;

interface Self {
  pid: number;
  argv: string[];
  execArgv: string[];
  execPath: string;
  title: string;
  cwd: string;
  env: Record<string, string>;
  secret: string | null;
  stdout: string;
  stderr: string;
  cmdline: string;
  environ: string[];
  greeting?: string;
}

interface PoolStats {
  size: number;
  idle: number;
  warming: number;
  handedOut: number;
  rssPerProcess: number;
  preload: string[];
  pids: number[];
}

/** The daemon's health answer: its warm pool. */
async function pool(sb: Sandbox): Promise<PoolStats> {
  const { url } = JSON.parse(readFileSync(join(sb.home, "daemon.json"), "utf8")) as { url: string };
  const token = readFileSync(join(sb.home, "token"), "utf8").trim();
  const res = await fetch(`${url}/v1/health`, { headers: { authorization: `Bearer ${token}` } });
  return ((await res.json()) as { warmPool: PoolStats }).warmPool;
}

/** Waits until the pool is full (none warming: the next launch takes one of these); its pids. */
async function fullPool(sb: Sandbox): Promise<number[]> {
  return eventually(async () => {
    const p = await pool(sb);
    return p.size > 0 && p.idle === p.size && p.warming === 0 ? p.pids : undefined;
  }, 60_000);
}

function environ(pid: number): string[] {
  return readFileSync(`/proc/${pid}/environ`, "latin1").split("\0").filter(Boolean);
}

/** Processes of this home that are warm and unassigned. */
function unassigned(sb: Sandbox): number[] {
  return processesWithHome(sb.home).filter((pid) => {
    try {
      return environ(pid).some((v) => v.startsWith("CARAVAN_WARM="));
    } catch {
      return false;
    }
  });
}

function setSecret(sb: Sandbox, value: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, "secret", "set", "WARM_KEY"], {
      cwd: ROOT,
      env: sb.env,
    });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    child.on("close", (code) => resolve({ code: code ?? 1, stdout: "", stderr }));
    child.stdin.end(`${value}\n`);
  });
}

async function self(endpoint: string): Promise<Self> {
  const r = await get(`${endpoint}/self`);
  expect(r.status, r.body).toBe(200);
  return JSON.parse(r.body) as Self;
}

/** What must be equal between two processes of one revision: all but pid and port. */
function comparable(s: Self) {
  // The port, and the replica (named by its port) in the OpenTelemetry resource attributes.
  const portless = (text: string) =>
    text.replace(/"port":\d+/, '"port":_').replace(/caravan\.replica=\d+/, "caravan.replica=_");
  const { pid: _pid, env, environ: vars, ...rest } = s;
  const { PORT: _port, CARAVAN_RUNTIME: runtime, OTEL_RESOURCE_ATTRIBUTES: otel, ...others } = env;
  return {
    ...rest,
    env: {
      ...others,
      CARAVAN_RUNTIME: portless(runtime ?? ""),
      OTEL_RESOURCE_ATTRIBUTES: portless(otel ?? ""),
    },
    environ: vars.filter((v) => !v.startsWith("PORT=")).map(portless),
  };
}

async function probeStatus(sb: Sandbox, name = "probe"): Promise<StatusJSON> {
  return (await status(sb))[name]!;
}

describe("warm pool", () => {
  const sb = useSandbox();

  it("starts an app in a warm process that cannot tell it from a cold one, and holds no secret before", async () => {
    expect((await setSecret(sb, SECRET)).code).toBe(0);
    // Cold: with --no-warm (the pool is emptied too).
    const cold = await deploy(sb, [APPS, "probe", "--no-warm"]);
    expect(cold.code, cold.stderr).toBe(0);
    const endpoint = cold.by.probe!.endpoint!;
    const coldSelf = await self(endpoint);
    expect((await pool(sb)).size).toBe(0);
    expect(coldSelf.greeting).toBe("hello from probe");
    expect(coldSelf.env.COLOUR).toBe("blue");

    // A deploy without the flag sets the pool up again; wait until it is warm.
    expect((await deploy(sb, [APPS, "probe", "--force"])).code).toBe(0);
    const warm = await fullPool(sb);
    for (const pid of warm) {
      const vars = environ(pid);
      // Before assignment: no secret (name or value), no app, no user code's anything.
      expect(vars.join("\n")).not.toContain(SECRET);
      expect(vars.some((v) => v.startsWith("WARM_KEY="))).toBe(false);
      expect(vars.some((v) => v.startsWith("CARAVAN_APP_NAME="))).toBe(false);
      expect(readlinkSync(`/proc/${pid}/fd/1`)).toBe(join(sb.home, "logs/warm-pool.log"));
    }
    const before = await pool(sb);

    const r = await deploy(sb, [APPS, "probe", "--force"]);
    expect(r.code, r.stderr).toBe(0);
    const [pid] = (await probeStatus(sb)).pids;
    expect(warm).toContain(pid);
    expect((await pool(sb)).handedOut).toBe(before.handedOut + 1);
    const warmSelf = await self(endpoint);
    expect(warmSelf.pid).toBe(pid);
    expect(warmSelf.secret).not.toBeNull();
    expect(comparable(warmSelf)).toEqual(comparable(coldSelf));

    // Its output goes to the app's log, as a cold process's does.
    expect((await get(`${endpoint}/say/marmalade`)).status).toBe(200);
    const logs = await sb.run(["logs", "probe"]);
    expect(logs.stdout).toContain("probe says marmalade");
    expect(logs.stdout).toContain("probe warns marmalade");
    expect(readFileSync(join(sb.home, "logs/warm-pool.log"), "utf8")).not.toContain("marmalade");
    // It is traced as a cold one is (its tracer starts with the app's environment): the
    // request's trace has the app's own span beside the gateway's.
    await eventually(async () => {
      const t = json<{ traces: { root: string; spans: number }[] }>(
        await sb.run(["traces", "--json"]),
      );
      return t.traces.some((x) => x.root.endsWith("GET /say/marmalade") && x.spans >= 2);
    }, 15_000);

    // A crash is restarted as a cold one would be (here, in another warm process).
    await fullPool(sb);
    const handed = (await pool(sb)).handedOut;
    await get(`${endpoint}/crash`);
    const after = await eventually(async () => {
      const s = await probeStatus(sb);
      return s.state === "ready" && s.pids.length === 1 && s.pids[0] !== pid ? s : undefined;
    });
    expect(after.restarts).toBe(1);
    expect((await pool(sb)).handedOut).toBe(handed + 1);
    const restarted = await self(endpoint);
    expect(restarted.pid).toBe(after.pids[0]);
    expect(comparable(restarted)).toEqual(comparable(coldSelf));
  });

  it("starts task workers in warm processes, with their secrets only once assigned", async () => {
    expect((await setSecret(sb, SECRET)).code).toBe(0);
    expect((await deploy(sb, [APPS, "probe"])).code).toBe(0);
    const warm = await fullPool(sb);
    const r = await deploy(sb, [APPS, "warm-worker"]);
    expect(r.code, r.stderr).toBe(0);
    const run = await sb.run(["run", APPS, "warm-worker.whoami", "--json"]);
    expect(run.code, run.stderr).toBe(0);
    const out = json<{ run: { output: Self } }>(run).run.output;
    expect(warm).toContain(out.pid);
    expect(out.env.CARAVAN_APP_NAME).toBe("warm-worker");
    expect(out.secret).not.toBeNull();
    expect(Object.keys(out.env).some((k) => k.startsWith("CARAVAN_WARM"))).toBe(false);
    expect(out.stdout).toBe(join(sb.home, "logs/default/development/warm-worker.log"));
    expect(out.environ).toContain("CARAVAN_APP_NAME=warm-worker");
  });

  it("never hands one warm process to two apps, nor one again after its app is replaced", async () => {
    expect((await setSecret(sb, SECRET)).code).toBe(0);
    expect((await deploy(sb, [APPS, "probe"])).code).toBe(0);
    const warm = await fullPool(sb);
    const before = (await pool(sb)).handedOut;
    const names = ["copy-1", "copy-2", "copy-3", "copy-4", "copy-5"];
    const r = await deploy(sb, [APPS, ...names]);
    expect(r.code, r.stderr).toBe(0);
    const all = await status(sb);
    const pids = names.map((n) => all[n]!.pids[0]!);
    expect(new Set(pids).size).toBe(names.length);
    const fromPool = pids.filter((p) => warm.includes(p));
    expect(fromPool.length).toBeGreaterThan(0);
    expect((await pool(sb)).handedOut - before).toBe(fromPool.length);
    for (const name of names)
      expect((await self(r.by[name]!.endpoint!)).env.CARAVAN_APP_NAME).toBe(name);

    const again = await deploy(sb, [APPS, ...names, "--force"]);
    expect(again.code, again.stderr).toBe(0);
    const now = await status(sb);
    const next = names.map((n) => now[n]!.pids[0]!);
    expect(new Set(next).size).toBe(names.length);
    for (const p of next) expect([...pids, ...(await pool(sb)).pids]).not.toContain(p);
  });

  it("starts everything cold when the config turns the pool off, or with --no-warm", async () => {
    expect((await setSecret(sb, SECRET)).code).toBe(0);
    const off = await deploy(sb, [OFF, "probe"]);
    expect(off.code, off.stderr).toBe(0);
    const p = await pool(sb);
    expect(p).toMatchObject({ size: 0, idle: 0 });
    expect(unassigned(sb)).toEqual([]);
    const offSelf = await self(off.by.probe!.endpoint!);
    expect(offSelf.greeting).toBe("hello from probe");
    expect(offSelf.secret).not.toBeNull();

    // Back on (the other project's default), then off for one deploy: the pool is emptied.
    expect((await deploy(sb, [APPS, "probe", "--force"])).code).toBe(0);
    await fullPool(sb);
    const noWarm = await deploy(sb, [APPS, "probe", "--force", "--no-warm"]);
    expect(noWarm.code, noWarm.stderr).toBe(0);
    expect((await pool(sb)).handedOut).toBe(0);
    await eventually(() => unassigned(sb).length === 0);
    expect((await self(noWarm.by.probe!.endpoint!)).env.COLOUR).toBe("blue");
  });
});
