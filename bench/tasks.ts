/**
 * Task-run benchmark: `npx tsx bench/tasks.ts` (or `npm run bench:tasks`).
 *
 *   --runs N     warm runs measured per variant, after --warmup unmeasured ones (default 200)
 *   --warmup N   (default 20)
 *   --cold N     cold samples per cold variant (default 10)
 *   --keep       keep the temp CARAVAN_HOME (logs, state.db) for inspection
 *
 * The round trip of a no-op task (`noop()` returns null), through the real control plane
 * (a daemon in a fresh CARAVAN_HOME under a temp dir, started by the first deploy), measured
 * with the programmatic API from this process:
 *
 *   in-process          `await noop()`: the task called as a function here (no control plane)
 *   warm, script        `await run(noop)` from this script: what a script or the CLI pays
 *                       (config lookup, daemon lookup + health check, POST /v1/runs?wait)
 *   warm, from an app   `await run(noop)` inside a deployed Fastify app (bench-caller, which
 *                       depends on bench-env) looping N times and reporting its own timings:
 *                       one POST /v1/runs?wait per run, the path an app uses
 *   warm, one request   `HttpBackend.startRun` alone: one POST /v1/runs?wait (the daemon's part)
 *   cold: no worker     the environment's only worker is SIGKILLed first (the control plane
 *                       sees it go and starts none until asked), so the run spawns a worker,
 *                       which loads the snapshot, then runs: the true cold start
 *   cold: new revision  a redeploy of bench-env with a changed envVar (a new revision), timed
 *                       on its own; then the first run on it. Registering a revision waits for
 *                       one worker to load it, so that first run finds a worker that has
 *                       loaded but never run anything: it is not a process start
 *
 * Then where the warm time goes: a bare authenticated HTTP round trip to the daemon
 * (GET /v1/health), the store's writes per run (one insert, two updates, on a Store in a temp
 * dir), an IPC round trip to a child process, and on the client side `loadConfig` and
 * `ensureDaemon` (which is what `run()` from a script calls every time).
 *
 * At the end the daemon is stopped (`caravan server stop`), every process of the temp
 * CARAVAN_HOME is checked gone (anything left is reported and killed by pid) and the dir is
 * removed. Results and analysis: the "Task runs" section of bench/RESULTS.md.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { availableParallelism, cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { processesWithHome } from "../test/processes.ts";
import { performance } from "node:perf_hooks";
import Fastify from "fastify";
import { TaskEnvironment, deploy, inRuntime, run } from "caravan-deploy";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";

// --- what is deployed (this file is the snapshot: workers and the app import it too) ---

export const benchEnv = new TaskEnvironment({
  name: "bench-env",
  // Changed for each "new revision" sample, so each redeploy is a new revision.
  envVars: { BENCH_REVISION: "0" },
});

export const noop = benchEnv.task(function noop() {
  return null;
});

const callerApp = Fastify();
callerApp.get<{ Querystring: { n?: string } }>("/bench", async (req) => {
  const n = Number(req.query.n ?? 1);
  const times: number[] = [];
  for (let i = 0; i < n; i++) {
    const t0 = performance.now();
    await run(noop);
    times.push(performance.now() - t0);
  }
  return { pid: process.pid, times };
});
export const benchCaller = new FastifyAppEnvironment({
  name: "bench-caller",
  app: callerApp,
  requiresAuth: false,
  dependsOn: [benchEnv],
});

// --- the benchmark (only in the process started by `tsx bench/tasks.ts`; see the end) ---

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const option = (name: string, dflt: number) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? Number(argv[i + 1]) : dflt;
  };
  const RUNS = option("runs", 200);
  const WARMUP = option("warmup", 20);
  const COLD = option("cold", 10);
  const KEEP = argv.includes("--keep");
  const log = (msg: string) => process.stderr.write(`${msg}\n`);

  const home = mkdtempSync(join(tmpdir(), "caravan-bench-tasks-"));
  process.env.CARAVAN_HOME = home;
  // Set in some sandboxes; it costs 50-100 ms on every node start (the daemon, workers).
  delete process.env.NODE_EXTRA_CA_CERTS;
  const scope = { project: "default", domain: "development" };
  const load0 = loadavg()[0]!;

  const { HttpBackend } = await import("../src/backends/http-client.ts");
  const { ensureDaemon } = await import("../src/backends/local/daemon.ts");
  const { loadConfig } = await import("../src/sdk/config.ts");

  const results: Row[] = [];
  try {
    // (c) In-process.
    const inProcess: number[] = [];
    for (let i = 0; i < 10 * RUNS + 1000; i++) {
      const t0 = performance.now();
      await noop();
      if (i >= 1000) inProcess.push(performance.now() - t0);
    }
    results.push(row("in-process: `await noop()`", inProcess));

    // First deploy: starts the daemon, registers bench-env (one worker), starts bench-caller.
    let t0 = performance.now();
    const deployed = await deploy(benchCaller);
    const deployMs = performance.now() - t0;
    const callerUrl = deployed.find((d) => d.name === "bench-caller")!.endpoint!;
    log(`deployed in ${deployMs.toFixed(0)} ms; bench-caller at ${callerUrl}`);

    // (a) Warm, from this script.
    const warmScript = await timed(WARMUP, RUNS, () => run(noop));
    results.push(row("warm, script: `await run(noop)`", warmScript));

    // (a) Warm, from inside an app: its own timings.
    await getJSON(`${callerUrl}/bench?n=${WARMUP}`);
    const fromApp = (await getJSON(`${callerUrl}/bench?n=${RUNS}`)) as { times: number[] };
    results.push(row("warm, from an app: `await run(noop)`", fromApp.times));

    // (a) Warm, the one request alone.
    const daemon = await ensureDaemon();
    const backend = new HttpBackend(daemon.url, daemon.token);
    const warmRequest = await timed(WARMUP, RUNS, async () => {
      const r = await backend.startRun({ scope, task: noop.id, args: [] }, { waitMs: 25_000 });
      if (r.status !== "succeeded") throw new Error(`run ${r.id} ${r.status}`);
    });
    results.push(row("warm, one request: POST /v1/runs?wait", warmRequest));

    // (b) Cold: no worker left.
    const noWorker: number[] = [];
    for (let i = 0; i < COLD; i++) {
      const pids = await workerPids(backend);
      for (const pid of pids) process.kill(pid, "SIGKILL");
      for (let k = 0; (await workerPids(backend)).length; k++) {
        if (k > 1000) throw new Error("the killed worker is still listed");
        await sleep(5);
      }
      t0 = performance.now();
      await run(noop);
      noWorker.push(performance.now() - t0);
    }
    results.push(row("cold, no worker: spawn + load + run", noWorker));

    // (b) Cold: a new revision each time.
    const redeploys: number[] = [];
    const firstRuns: number[] = [];
    const secondRuns: number[] = [];
    for (let i = 1; i <= COLD; i++) {
      // The declaration is this module's; a changed envVar is a new revision.
      (benchEnv.envVars as Record<string, string>).BENCH_REVISION = String(i);
      t0 = performance.now();
      const [d] = await deploy(benchEnv);
      redeploys.push(performance.now() - t0);
      if (d!.status !== "ready") throw new Error(`bench-env redeploy: ${d!.envRepr()}`);
      t0 = performance.now();
      await run(noop);
      firstRuns.push(performance.now() - t0);
      t0 = performance.now();
      await run(noop);
      secondRuns.push(performance.now() - t0);
    }
    results.push(row("new revision: the redeploy itself", redeploys));
    results.push(row("new revision: first run after it", firstRuns));
    results.push(row("new revision: second run", secondRuns));

    // Where the warm time goes.
    const parts: Row[] = [];
    parts.push(
      row(
        "HTTP round trip to the daemon (GET /v1/health, with auth)",
        await timed(WARMUP, RUNS, async () => {
          const res = await fetch(`${daemon.url}/v1/health`, {
            headers: { authorization: `Bearer ${daemon.token}` },
          });
          await res.json();
        }),
      ),
    );
    parts.push(row("store writes per run (insert + 2 updates, WAL)", await storeWrites(RUNS)));
    parts.push(row("IPC round trip to a child process", await ipcRoundTrip(WARMUP, RUNS)));
    parts.push(
      row(
        "client: loadConfig (per run() from a script)",
        await timed(WARMUP, RUNS, () => loadConfig(process.cwd(), {})),
      ),
    );
    parts.push(
      row(
        "client: import() of a loaded module under tsx (5 per run() from a script)",
        await timed(WARMUP, RUNS, () => import("../src/backends/http-client.ts")),
      ),
    );
    parts.push(
      row(
        "client: ensureDaemon (per run() from a script)",
        await timed(WARMUP, RUNS, () => ensureDaemon()),
      ),
    );

    parts.push(
      row(
        "cold context: node boot (spawn `node -e 0` until it exits)",
        await timed(2, COLD, () => {
          const child = spawn(process.execPath, ["-e", "0"], { stdio: "ignore" });
          return new Promise((r) => child.once("exit", r));
        }),
      ),
    );

    const runs = await backend.listRuns(scope, { limit: 1 });
    const sample = runs[0];
    report({
      results,
      parts,
      deployMs,
      load0,
      load1: loadavg()[0]!,
      runs: RUNS,
      warmup: WARMUP,
      cold: COLD,
      sampleDuration: sample?.durationMs,
    });
  } finally {
    cleanUp(home, KEEP, log);
  }
}

// --- measuring ---

interface Row {
  what: string;
  n: number;
  median: number;
  p90: number;
  p99: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

function row(what: string, samples: number[]): Row {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    what,
    n: sorted.length,
    median: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    p99: quantile(sorted, 0.99),
  };
}

async function timed(warmup: number, runs: number, fn: () => Promise<unknown>) {
  const out: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    const t0 = performance.now();
    await fn();
    if (i >= warmup) out.push(performance.now() - t0);
  }
  return out;
}

async function getJSON(url: string): Promise<unknown> {
  const res = await fetch(url);
  if (!res.ok) throw new Error(`${url}: ${res.status} ${await res.text()}`);
  return res.json();
}

async function workerPids(backend: {
  status(scope: { project: string; domain: string }): Promise<{ name: string; pids: number[] }[]>;
}): Promise<number[]> {
  const list = await backend.status({ project: "default", domain: "development" });
  return list.find((e) => e.name === "bench-env")?.pids ?? [];
}

/** What the store writes for one run, on a Store of its own (same pragmas as the daemon's). */
async function storeWrites(runs: number): Promise<number[]> {
  const { Store, now } = await import("../src/backends/local/store.ts");
  const dir = mkdtempSync(join(tmpdir(), "caravan-bench-store-"));
  const store = new Store(join(dir, "state.db"));
  const out: number[] = [];
  try {
    for (let i = 0; i < runs + 20; i++) {
      const t0 = performance.now();
      const run = {
        id: `run-${String(i).padStart(12, "0")}`,
        project: "default",
        domain: "development",
        environment: "bench-env",
        task: "bench-env.noop",
        revision: "r",
        status: "queued" as const,
        args: [],
        attempts: 0,
        caller: "api",
        createdAt: now(),
      };
      store.insertRun(run);
      store.updateRun({ ...run, status: "running", attempts: 1, startedAt: now() });
      store.updateRun({
        ...run,
        status: "succeeded",
        attempts: 1,
        output: null,
        startedAt: now(),
        finishedAt: now(),
        durationMs: 0,
      });
      if (i >= 20) out.push(performance.now() - t0);
    }
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
  return out;
}

/** A run message to a forked child and its answer, as between the daemon and a worker. */
async function ipcRoundTrip(warmup: number, runs: number): Promise<number[]> {
  const echo =
    'process.on("message", (m) => process.send({ type: "result", runId: m.runId, ok: true, output: null }))';
  const child = spawn(process.execPath, ["-e", echo], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  try {
    await new Promise((r) => child.once("spawn", r));
    return await timed(warmup, runs, () => {
      const answered = new Promise((r) => child.once("message", r));
      child.send({ type: "run", runId: "run-x", task: "bench-env.noop", args: [] });
      return answered;
    });
  } finally {
    child.kill();
  }
}

// --- reporting ---

function report(r: {
  results: Row[];
  parts: Row[];
  deployMs: number;
  load0: number;
  load1: number;
  runs: number;
  warmup: number;
  cold: number;
  sampleDuration: number | undefined;
}): void {
  const ms = (x: number) => (x < 0.1 ? x.toFixed(4) : x < 10 ? x.toFixed(2) : x.toFixed(0));
  const inProcess = r.results[0]!.median;
  const warm = r.results.find((x) => x.what.startsWith("warm, script"))!.median;
  const lines: string[] = [];
  lines.push(
    `**Machine:** nproc = ${availableParallelism()}, ${cpus()[0]?.model ?? "?"}, Node.js ${process.version}, ${process.platform} ${process.arch}; load average ${r.load0.toFixed(1)} → ${r.load1.toFixed(1)}.`,
    "",
    `${r.runs} measured warm runs per variant after ${r.warmup} unmeasured; ${r.cold} cold samples per cold variant. First deploy (daemon start + bench-env + bench-caller): ${r.deployMs.toFixed(0)} ms.`,
    "",
    "| variant | n | median (ms) | p90 (ms) | p99 (ms) | × in-process | × warm (script) |",
    "|---|---:|---:|---:|---:|---:|---:|",
  );
  for (const x of r.results) {
    lines.push(
      `| ${x.what} | ${x.n} | ${ms(x.median)} | ${ms(x.p90)} | ${ms(x.p99)} | ${Math.round(x.median / inProcess).toLocaleString("en")} | ${(x.median / warm).toFixed(2)} |`,
    );
  }
  lines.push("", "Parts, measured separately (where the time goes):", "");
  lines.push("| part | n | median (ms) | p90 (ms) | p99 (ms) |", "|---|---:|---:|---:|---:|");
  for (const x of r.parts)
    lines.push(`| ${x.what} | ${x.n} | ${ms(x.median)} | ${ms(x.p90)} | ${ms(x.p99)} |`);
  if (r.sampleDuration !== undefined)
    lines.push(
      "",
      `The run record's own durationMs (dispatch to result, whole ms) of the last run: ${r.sampleDuration}.`,
    );
  const target = warm < 10 ? "met" : "missed";
  lines.push("", `Target (warm median under 10 ms): ${target} (${ms(warm)} ms from a script).`);
  process.stdout.write(lines.join("\n") + "\n");
}

// --- clean-up ---

function cleanUp(home: string, keep: boolean, log: (m: string) => void): void {
  const stop = spawnSync(
    process.execPath,
    [join(import.meta.dirname, "../bin/caravan.js"), "server", "stop"],
    { env: { ...process.env, CARAVAN_HOME: home }, encoding: "utf8", timeout: 60_000 },
  );
  if (stop.status !== 0) log(`caravan server stop: exit ${stop.status}: ${stop.stderr}`);
  const left = processesWithHome(home);
  for (const pid of left) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone meanwhile */
    }
  }
  if (left.length) log(`processes left running (killed): ${left.join(", ")}`);
  if (keep) log(`kept ${home}`);
  else rmSync(home, { recursive: true, force: true });
}

// Last, once every declaration above is initialised.
if (!inRuntime()) await main();
