/**
 * Scale benchmark (issue 16, "Scale on small machines"): `npx tsx bench/scale.ts`.
 *
 *   --apps N          apps in the graph (default 500): a root and N-1 apps that depend on it
 *   --status-runs N   `caravan status` runs measured (default 5; the median is reported)
 *   --keep            keep the temp dir (generated file, CARAVAN_HOME with logs) for inspection
 *
 * Every app is a command app: `node -e` running a tiny node:http server on $PORT/$HOST.
 * Measured, in one run on this machine:
 *   baseline   this process spawns the same N node programs itself, root first, then the
 *              others at most `bound` at a time (the control plane's start bound, read from
 *              its health answer), each counted done once it answers HTTP (the same probe as
 *              caravan's); then kills them
 *   deploy     `caravan deploy --json` of the graph into a fresh CARAVAN_HOME (includes the
 *              daemon's start, loading the file and the snapshot), until the CLI exits; every
 *              app must be ready (failures are counted and their reasons printed)
 *   status     `caravan status` (the table) and `caravan status --json` with N apps deployed,
 *              and `caravan status` of an empty project on the same daemon (the CLI's fixed
 *              cost); medians of --status-runs; also `GET /v1/status` timed inside this process
 *   memory     the daemon's VmRSS and VmHWM (peak) from /proc/<pid>/status after the deploy
 * Then `caravan server stop` takes everything down, and no process of the home may be left.
 * Results: the "Scale" section of bench/RESULTS.md.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg, totalmem, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { probeHttp } from "../src/sdk/probe.ts";
import { freePort } from "../src/backends/local/os.ts";
import { processesWithHome } from "../test/processes.ts";
import buildDist from "../test/build-setup.ts";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "bin/caravan.js");

function option(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const APPS = Number(option("apps") ?? 500);
const STATUS_RUNS = Number(option("status-runs") ?? 5);
const KEEP = process.argv.includes("--keep");
/** Every line says how busy the machine was (other work on a shared machine skews times). */
const log = (msg: string) => process.stderr.write(`${msg}  [load ${loadavg()[0]!.toFixed(1)}]\n`);

/** The app: a node:http server on $PORT at $HOST (what caravan gives a command app). */
const SCRIPT = `require("http").createServer((q, s) => s.end("ok")).listen(+process.env.PORT, process.env.HOST)`;

const WORK = mkdtempSync(join(tmpdir(), "caravan-bench-scale-"));
const HOME = join(WORK, "home");
const FILE = join(WORK, "scale.mjs");
/** As in bench/deploy.ts: variables that slow every node start are dropped. */
const ENV: NodeJS.ProcessEnv = { ...process.env, CARAVAN_HOME: HOME, NO_COLOR: "1" };
for (const k of ["NODE_EXTRA_CA_CERTS", "NODE_OPTIONS"]) delete ENV[k];

function generate(): void {
  mkdirSync(join(WORK, "node_modules"), { recursive: true });
  symlinkSync(ROOT, join(WORK, "node_modules/caravan-deploy"), "dir");
  writeFileSync(
    join(WORK, "package.json"),
    JSON.stringify({ name: "caravan-bench-scale", private: true, type: "module" }),
  );
  writeFileSync(
    FILE,
    `import { AppEnvironment } from "caravan-deploy";
const command = ["node", "-e", ${JSON.stringify(SCRIPT)}];
export const root = new AppEnvironment({ name: "root", command, requiresAuth: false });
export const apps = Array.from(
  { length: ${APPS - 1} },
  (_, i) =>
    new AppEnvironment({
      name: \`app-\${String(i + 1).padStart(3, "0")}\`,
      command,
      requiresAuth: false,
      dependsOn: [root],
    }),
);
`,
  );
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

function caravan(args: string[], env: NodeJS.ProcessEnv = {}): Promise<Run> {
  return new Promise((done) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: WORK,
      env: { ...ENV, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    child.on("exit", (code) => done({ code, stdout, stderr, ms: performance.now() - t0 }));
  });
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

function daemonInfo(): { pid: number; url: string; token: string } {
  const info = JSON.parse(readFileSync(join(HOME, "daemon.json"), "utf8")) as {
    pid: number;
    url: string;
  };
  return { ...info, token: readFileSync(join(HOME, "token"), "utf8").trim() };
}

function memoryOf(pid: number): { rssMiB: number; hwmMiB: number } {
  const text = readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(text)![1]);
  return { rssMiB: kib("VmRSS") / 1024, hwmMiB: kib("VmHWM") / 1024 };
}

/** The same N programs, spawned by this process: root first, then `bound` at a time. */
async function baseline(bound: number): Promise<number> {
  const children: ChildProcess[] = [];
  const used = new Set<number>();
  const startOne = async () => {
    const port = await freePort(used);
    used.add(port);
    const child = spawn(process.execPath, ["-e", SCRIPT], {
      env: { PATH: process.env.PATH, PORT: String(port), HOST: "127.0.0.1" },
      stdio: "ignore",
    });
    children.push(child);
    let gone = false;
    child.once("exit", () => (gone = true));
    if (!(await probeHttp(port, { stop: () => gone }))) throw new Error("a baseline app exited");
  };
  const t0 = performance.now();
  try {
    await startOne();
    let left = APPS - 1;
    await Promise.all(
      Array.from({ length: Math.min(bound, left) }, async () => {
        while (left > 0) {
          left--;
          await startOne();
        }
      }),
    );
    return performance.now() - t0;
  } finally {
    await Promise.all(
      children.map(
        (c) =>
          new Promise<void>((r) => {
            if (c.exitCode !== null || c.signalCode !== null) return r();
            c.once("exit", () => r());
            c.kill("SIGKILL");
          }),
      ),
    );
  }
}

async function main(): Promise<void> {
  try {
    buildDist();
  } catch {
    // tsc still emits on type errors (someone else's work in progress): measure what it built.
    log("warning: the build reported errors; measuring the dist/ it emitted");
  }
  generate();
  log(`# ${APPS} command apps (a root and ${APPS - 1} dependents) in ${WORK}`);
  const deploy = await caravan(["deploy", FILE, "--json"]);
  let failed: { name: string; status: string; error?: string }[] = [];
  let deployments: { name: string; status: string; error?: string }[] = [];
  try {
    deployments = (JSON.parse(deploy.stdout) as { deployments: typeof deployments }).deployments;
    failed = deployments.filter((d) => d.status !== "ready");
  } catch {
    log(`deploy printed no JSON (exit ${deploy.code}):\n${deploy.stderr.slice(-4000)}`);
  }
  log(
    `deploy: ${(deploy.ms / 1000).toFixed(1)} s, exit ${deploy.code}, ${deployments.length - failed.length} ready, ${failed.length} not`,
  );
  const reasons = new Map<string, number>();
  for (const f of failed) {
    const why = `${f.status}: ${(f.error ?? "").split("\n")[0]!.replace(/\b(app|port)[-\s]?\d+/g, "$1 N")}`;
    reasons.set(why, (reasons.get(why) ?? 0) + 1);
  }
  for (const [why, n] of reasons) log(`  ${n} × ${why}`);

  const daemon = daemonInfo();
  const memory = memoryOf(daemon.pid);
  const health = (await (
    await fetch(`${daemon.url}/v1/health`, {
      headers: { authorization: `Bearer ${daemon.token}` },
    })
  ).json()) as { starts?: { limit: number; peak: number; total: number } };
  log(
    `daemon: pid ${daemon.pid}, RSS ${memory.rssMiB.toFixed(0)} MiB (peak ${memory.hwmMiB.toFixed(0)} MiB)`,
  );
  if (health.starts) log(`start bound: ${JSON.stringify(health.starts)}`);

  // status: the table, --json, an empty project (the CLI's fixed cost), the API alone.
  const timings: Record<string, number[]> = { table: [], json: [], empty: [], api: [] };
  let rows = 0;
  let bytes = 0;
  for (let i = 0; i < STATUS_RUNS; i++) {
    const table = await caravan(["status"]);
    if (table.code !== 0) throw new Error(`status failed: ${table.stderr}`);
    rows = table.stdout.trim().split("\n").length - 1;
    timings.table!.push(table.ms);
    const asJson = await caravan(["status", "--json"]);
    timings.json!.push(asJson.ms);
    timings.empty!.push((await caravan(["status", "--project", "nothing-here"])).ms);
    const t0 = performance.now();
    const res = await fetch(`${daemon.url}/v1/status?project=default&domain=development`, {
      headers: { authorization: `Bearer ${daemon.token}` },
    });
    bytes = (await res.arrayBuffer()).byteLength;
    timings.api!.push(performance.now() - t0);
  }
  const med = Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, median(v)]));
  log(
    `status (${rows} rows): table ${med.table!.toFixed(0)} ms, --json ${med.json!.toFixed(0)} ms, empty project ${med.empty!.toFixed(0)} ms, GET /v1/status ${med.api!.toFixed(0)} ms (${(bytes / 1024).toFixed(0)} KiB)`,
  );

  const bound = health.starts?.limit ?? Number(option("bound") ?? 2 * availableParallelism());
  const base = await baseline(bound);
  log(`baseline: ${APPS} node programs, ${bound} at a time: ${(base / 1000).toFixed(1)} s`);

  const stop = await caravan(["server", "stop"]);
  const left = processesWithHome(HOME);
  log(`teardown: server stop exit ${stop.code}, ${left.length} processes of the home left`);

  const cpu = cpus()[0]?.model ?? "?";
  console.log(`
| machine | ${availableParallelism()} × ${cpu}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, load average at the end ${loadavg()[0]!.toFixed(1)} |
|---|---|
| apps | ${APPS} command apps (a root and ${APPS - 1} dependents), \`node -e\` http servers |
| deploy | ${(deploy.ms / 1000).toFixed(1)} s (exit ${deploy.code}), ${deployments.length - failed.length} ready, ${failed.length} failed |
| baseline (same programs, root then ${bound} at a time) | ${(base / 1000).toFixed(1)} s |
| deploy / baseline | ${(deploy.ms / base).toFixed(2)}× |
| start bound | ${health.starts ? `${health.starts.limit} (peak ${health.starts.peak}, ${health.starts.total} starts)` : "none"} |
| daemon memory after the deploy | RSS ${memory.rssMiB.toFixed(0)} MiB, peak ${memory.hwmMiB.toFixed(0)} MiB |
| \`caravan status\` (${rows} rows), median of ${STATUS_RUNS} | ${med.table!.toFixed(0)} ms |
| \`caravan status --json\` | ${med.json!.toFixed(0)} ms |
| \`caravan status\` of an empty project (fixed cost) | ${med.empty!.toFixed(0)} ms |
| status / empty status | ${(med.table! / med.empty!).toFixed(2)}× |
| \`GET /v1/status\` alone | ${med.api!.toFixed(0)} ms, ${(bytes / 1024).toFixed(0)} KiB |
`);
  if (left.length) throw new Error(`processes left: ${left.join(", ")}`);
  if (failed.length) process.exitCode = 1;
}

try {
  await main();
} finally {
  // Whatever happened, nothing of the run stays.
  spawnSync(process.execPath, [BIN, "server", "stop"], { env: ENV, stdio: "ignore" });
  for (const pid of processesWithHome(HOME)) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* gone */
    }
  }
  if (!KEEP) rmSync(WORK, { recursive: true, force: true });
}
