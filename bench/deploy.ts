/**
 * Deploy benchmark: `npx tsx bench/deploy.ts` (or `npm run bench:deploy`).
 *
 *   --runs N        measured rounds of the steady-state variants (default 7)
 *   --cold-runs N   measured cold deploys per scenario (default 5)
 *   --only X        only scenarios whose id contains X (e.g. "http", "fanout")
 *   --json FILE     also write every raw measurement to FILE
 *   --keep          keep the temp dir (generated files, logs) for inspection
 *   --root DIR      benchmark the caravan checkout in DIR instead of this one
 *   --label TEXT    how to name the code under test in the report (default: its git HEAD)
 *   --quiet F       before each measurement, wait until less than F of the CPUs are busy
 *                   (default 0.2) ...
 *   --quiet-wait S  ... for at most S seconds (default 60), then measure anyway
 *   --layout L      how the fastify graphs are declared: "file" (default: every app in the one
 *                   file deployed) or "modules" (a module per app, which imports its
 *                   dependencies' modules; the deployed file imports them all): a process then
 *                   evaluates only its own app's module, when caravan bundles per environment
 *   --variants V,W  only these variants (e.g. "baseline,caravan-warm,caravan-unchanged")
 *   --no-breakdown  skip the fixed-cost breakdown after the rounds
 *   --max-foreign F repeat a measurement (up to --retries times, default 4) when processes
 *                   that are not the benchmark's used more than F of one CPU during it
 *                   (default 0.1): other work on a shared machine distorts start-up times
 *
 * What it measures. Two graphs of apps with known start-up delays:
 *   chain5    a1 -> a2 -> a3 -> a4 -> a5 (each depends on the previous), every app sleeps 100 ms
 *   fanout20  20 independent leaves (leaf i sleeps 100 + 10*(i-1) ms) and one root that
 *             depends on all 20 (sleeps 100 ms): 21 apps, critical path = slowest leaf + root
 * in two flavours:
 *   http      command apps (`new AppEnvironment({ command, args: ["$PORT", ...] })`) running a
 *             plain node:http program that sleeps D ms, then listens (caravan probes it)
 *   fastify   `FastifyAppEnvironment`s served by caravan's runtime (an `onReady` hook sleeps
 *             D ms; ready is reported over IPC); outside caravan the same Fastify app is a
 *             plain .mjs program
 * Every app appends `{name, pid, start, body, declared, listen}` to an events file the moment
 * `listen` calls back (`start` = `performance.timeOrigin`, when its process began; `body` and
 * `declared` bracket its module's declarations), so every variant is timed from the apps' own
 * clocks, not from polling:
 *   baseline        this process spawns each program itself, each as soon as its dependencies
 *                   print "listening" on stdout: the ideal orchestrator (no polling, no daemon)
 *   concurrently    `concurrently "A" "wait-on tcp:127.0.0.1:PA && B" ...` with fixed ports,
 *                   wait-on's defaults (250 ms poll); time until the last app listens
 *   concurrently-i20  the same with `wait-on -i 20` (a tuned poll)
 *   caravan-cold    `caravan deploy --json` into a fresh CARAVAN_HOME: includes the daemon's
 *                   start; time until the CLI exits
 *   caravan-warm    daemon running, apps deleted before: `caravan deploy --json`; its warm
 *                   pool (caravan.config.json: `warmPool: { size: 21 }`) full before it starts
 *   caravan-nowarm  the same with `--no-warm` (every process cold), on a daemon of its own so
 *                   that the other's pool stays full
 *   caravan-unchanged  the same deploy again: nothing to start (the fixed cost of a deploy)
 *   caravan-force   `caravan deploy --json --force` over the running graph (stops and restarts)
 * Rounds interleave every variant of every scenario after one discarded warm-up round; medians
 * and ratios against the baseline of the same run are printed as markdown. Then the overhead
 * is broken down: CLI start, `plan` (loading the user file), daemon start, runtime build and
 * snapshot (esbuild), HTTP round trips, and the supervisor's spawn + readiness probe against a
 * zero-overhead spawn for several start-up delays.
 *
 * Everything runs under a temp dir (apps, CARAVAN_HOMEs); at the end every control plane is
 * stopped, every process started for the run is checked gone, and the dir is removed.
 * Method, figures and analysis: the "Deploy" section of bench/RESULTS.md.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { pathToFileURL } from "node:url";
import { tcpOpen } from "../src/sdk/probe.ts";
import { homeMark } from "../test/processes.ts";

/**
 * The caravan under test: this checkout, or `--root DIR` (e.g. a `git archive` of a commit
 * with a `node_modules` link, while the working tree is being edited). Its modules are
 * imported from there; only their types come from this checkout.
 */
const ROOT = resolve(
  process.argv.includes("--root")
    ? process.argv[process.argv.indexOf("--root") + 1]!
    : join(import.meta.dirname, ".."),
);
const fromRoot = <T>(path: string): Promise<T> =>
  import(pathToFileURL(join(ROOT, path)).href) as Promise<T>;
const internals = async () => ({
  ...(await fromRoot<typeof import("../src/backends/local/control-plane.ts")>(
    "src/backends/local/control-plane.ts",
  )),
  ...(await fromRoot<typeof import("../src/backends/local/daemon.ts")>(
    "src/backends/local/daemon.ts",
  )),
  ...(await fromRoot<typeof import("../src/backends/local/home.ts")>("src/backends/local/home.ts")),
  ...(await fromRoot<typeof import("../src/sdk/environment.ts")>("src/sdk/environment.ts")),
});

const BIN = join(ROOT, "bin/caravan.js");
const NODE = process.execPath;

// --- options ---

function option(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}
const RUNS = Number(option("runs") ?? 7);
const COLD_RUNS = Number(option("cold-runs") ?? 5);
const ONLY = option("only");
const JSON_OUT = option("json");
const KEEP = process.argv.includes("--keep");
const QUIET = Number(option("quiet") ?? 0.2);
const QUIET_WAIT_S = Number(option("quiet-wait") ?? 60);
const MAX_FOREIGN = Number(option("max-foreign") ?? 0.1);
const RETRIES = Number(option("retries") ?? 4);
const LAYOUT = (option("layout") ?? "file") as "file" | "modules";
if (LAYOUT !== "file" && LAYOUT !== "modules")
  throw new Error(`--layout file|modules, not ${LAYOUT}`);
const VARIANTS = option("variants")?.split(",");
const BREAKDOWN = !process.argv.includes("--no-breakdown");

/** Wall clock in ms with sub-ms precision, comparable across processes on this machine. */
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const log = (msg: string) => process.stderr.write(`${msg}\n`);

// --- graphs and scenarios ---

interface AppDef {
  name: string;
  delayMs: number;
  deps: string[];
}

type Flavour = "http" | "fastify";

interface Scenario {
  id: string;
  flavour: Flavour;
  graph: "chain5" | "fanout20";
  apps: AppDef[];
  /** Apps on the critical path (what a per-app overhead is divided by). */
  criticalApps: number;
  /** The caravan file declaring the graph, and the events file its apps write to. */
  caravanFile: string;
  caravanEvents: string;
}

function chain(prefix: string): AppDef[] {
  return Array.from({ length: 5 }, (_, i) => ({
    name: `${prefix}-chain-${i + 1}`,
    delayMs: 100,
    deps: i === 0 ? [] : [`${prefix}-chain-${i}`],
  }));
}

function fanout(prefix: string): AppDef[] {
  const leaves = Array.from({ length: 20 }, (_, i) => ({
    name: `${prefix}-fan-leaf-${String(i + 1).padStart(2, "0")}`,
    delayMs: 100 + 10 * i,
    deps: [] as string[],
  }));
  return [...leaves, { name: `${prefix}-fan-root`, delayMs: 100, deps: leaves.map((l) => l.name) }];
}

// --- generated files ---

const WORK = mkdtempSync(join(tmpdir(), "caravan-bench-deploy-"));
const EVENTS_DIR = join(WORK, "events");
const HOMES = join(WORK, "homes");
const WARM_HOME = join(HOMES, "warm");
const NOWARM_HOME = join(HOMES, "nowarm");
/** The warm pool caravan-warm runs with: one process per app of the largest graph. */
const POOL_SIZE = 21;
/**
 * The environment of every process the bench starts. Variables that slow down every node
 * start are dropped (NODE_EXTRA_CA_CERTS: this sandbox sets it, and loading it costs 50-100
 * ms per process; caravan's apps never see it, since the supervisor passes a minimal
 * environment), so that the baseline, concurrently and caravan's CLI and daemon boot node
 * alike. CARAVAN_BENCH_RUN marks the processes started outside caravan, for the final check.
 */
const CHILD_ENV: NodeJS.ProcessEnv = { ...process.env, CARAVAN_BENCH_RUN: WORK };
for (const k of ["NODE_EXTRA_CA_CERTS", "NODE_OPTIONS"]) delete CHILD_ENV[k];

const PROGRAM: Record<Flavour, string> = {
  http: join(WORK, "app-http.mjs"),
  fastify: join(WORK, "app-fastify.mjs"),
};

/**
 * What an app appends to its events file when `listen` calls back: when its process began
 * (`start`), when its module body began to run (`body`: after node's boot and its static
 * imports), when its declarations were done (`declared`), and when it listened.
 */
const EVENT_LINE = `JSON.stringify({ name, pid: process.pid, start: performance.timeOrigin, body: performance.timeOrigin + BODY, declared: performance.timeOrigin + DECLARED, listen: performance.timeOrigin + performance.now() }) + "\\n"`;

function generateFiles(scenarios: Scenario[]): void {
  mkdirSync(join(WORK, "node_modules"), { recursive: true });
  mkdirSync(EVENTS_DIR);
  mkdirSync(HOMES);
  // Bare imports of the generated files resolve to this checkout.
  symlinkSync(ROOT, join(WORK, "node_modules/caravan"), "dir");
  for (const dep of ["fastify", "tsx"])
    symlinkSync(join(ROOT, "node_modules", dep), join(WORK, "node_modules", dep), "dir");
  writeFileSync(
    join(WORK, "package.json"),
    JSON.stringify({ name: "caravan-bench-work", private: true, type: "module" }),
  );
  writeFileSync(
    join(WORK, "caravan.config.json"),
    JSON.stringify({ warmPool: { size: POOL_SIZE } }),
  );
  // usage: node app-http.mjs PORT DELAY_MS NAME EVENTS_FILE
  writeFileSync(
    PROGRAM.http,
    `import { appendFileSync } from "node:fs";
import { createServer } from "node:http";
const BODY = performance.now();
const [port, delay, name, events] = process.argv.slice(2);
const DECLARED = performance.now();
setTimeout(() => {
  const server = createServer((_req, res) => res.end(name));
  server.listen(Number(port), "127.0.0.1", () => {
    appendFileSync(events, ${EVENT_LINE});
    process.stdout.write(\`listening \${name}\\n\`);
  });
}, Number(delay));
`,
  );
  writeFileSync(
    PROGRAM.fastify,
    `import { appendFileSync } from "node:fs";
import Fastify from "fastify";
const BODY = performance.now();
const [port, delay, name, events] = process.argv.slice(2);
const app = Fastify();
app.get("/", async () => name);
app.addHook("onReady", () => new Promise((r) => setTimeout(r, Number(delay))));
app.addHook("onListen", async () => appendFileSync(events, ${EVENT_LINE}));
const DECLARED = performance.now();
await app.listen({ port: Number(port), host: "127.0.0.1" });
process.stdout.write(\`listening \${name}\\n\`);
`,
  );
  for (const s of scenarios) writeFileSync(s.caravanFile, caravanSource(s));
}

/** The caravan file declaring a scenario's graph (and, in the "modules" layout, its modules). */
function caravanSource(s: Scenario): string {
  const ident = (name: string) => name.replace(/-/g, "_");
  if (s.flavour === "fastify" && LAYOUT === "modules") {
    // One module per app, as a project with an app per file is laid out: it imports its
    // dependencies' modules (dependsOn needs them) and nothing else of the graph.
    const dir = s.caravanFile.replace(/\.ts$/, "");
    mkdirSync(dir, { recursive: true });
    for (const a of s.apps) {
      const deps = a.deps.map((d) => `import { ${ident(d)} } from "./${d}.ts";\n`).join("");
      writeFileSync(
        join(dir, `${a.name}.ts`),
        `import { appendFileSync } from "node:fs";
import Fastify from "fastify";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";
${deps}
const BODY = performance.now();
const EVENTS = ${JSON.stringify(s.caravanEvents)};
const name = ${JSON.stringify(a.name)};
const f = Fastify();
f.get("/", async () => name);
f.addHook("onReady", () => new Promise<void>((r) => setTimeout(r, ${a.delayMs})));
f.addHook("onListen", async () => appendFileSync(EVENTS, ${EVENT_LINE}));
export const ${ident(a.name)} = new FastifyAppEnvironment({ name, app: f, requiresAuth: false, dependsOn: [${a.deps.map(ident).join(", ")}] });
const DECLARED = performance.now();
`,
      );
    }
    const base = dir.slice(dir.lastIndexOf("/") + 1);
    return s.apps
      .map((a) => `export { ${ident(a.name)} } from "./${base}/${a.name}.ts";\n`)
      .join("");
  }
  const decls = s.apps.map(
    (a) =>
      `export const ${ident(a.name)} = app(${JSON.stringify(a.name)}, ${a.delayMs}, [${a.deps.map(ident).join(", ")}]);`,
  );
  const head =
    s.flavour === "http"
      ? `import { AppEnvironment } from "caravan-deploy";

const EVENTS = ${JSON.stringify(s.caravanEvents)};
const app = (name: string, delayMs: number, dependsOn: AppEnvironment[]) =>
  new AppEnvironment({
    name,
    command: [${JSON.stringify(NODE)}, ${JSON.stringify(PROGRAM.http)}],
    args: ["$PORT", String(delayMs), name, EVENTS],
    requiresAuth: false,
    dependsOn,
  });
`
      : `import { appendFileSync } from "node:fs";
import Fastify from "fastify";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";

const BODY = performance.now();
const EVENTS = ${JSON.stringify(s.caravanEvents)};
function server(name: string, delayMs: number) {
  const f = Fastify();
  f.get("/", async () => name);
  f.addHook("onReady", () => new Promise<void>((r) => setTimeout(r, delayMs)));
  f.addHook("onListen", async () => appendFileSync(EVENTS, ${EVENT_LINE}));
  return f;
}
const app = (name: string, delayMs: number, dependsOn: FastifyAppEnvironment[]) =>
  new FastifyAppEnvironment({ name, app: server(name, delayMs), requiresAuth: false, dependsOn });
`;
  const tail = s.flavour === "fastify" ? "const DECLARED = performance.now();\n" : "";
  return `${head}\n${decls.join("\n")}\n${tail}`;
}

// --- events ---

interface AppEvent {
  name: string;
  pid: number;
  start: number;
  body: number;
  declared: number;
  listen: number;
  /** caravan's variants: when the control plane spawned it or handed it a warm process (the
   * "loading" line of its log), and when it told it to start (the "starting" line). */
  loading?: number;
  starting?: number;
}

function readEvents(file: string): Map<string, AppEvent> {
  const out = new Map<string, AppEvent>();
  if (!existsSync(file)) return out;
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line.trim()) continue;
    try {
      const e = JSON.parse(line) as AppEvent;
      out.set(e.name, e);
    } catch {
      /* a line being written */
    }
  }
  return out;
}

// --- processes and ports ---

async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<ReturnType<typeof createServer>>((res, rej) => {
          const srv = createServer();
          srv.once("error", rej);
          srv.listen(0, "127.0.0.1", () => res(srv));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  return ports;
}

/**
 * After a variant stopped its apps, none of their ports may still answer. (A process that is
 * already a zombie can still accept connections for a moment on this kernel: poll briefly.)
 */
async function checkPortsClosed(ports: number[], what: string): Promise<void> {
  const stillOpen = async () =>
    (
      await Promise.all(ports.map(async (p) => ((await tcpOpen(p, "127.0.0.1", 500)) ? p : 0)))
    ).filter(Boolean);
  let open = await stillOpen();
  for (let i = 0; open.length && i < 100; i++) {
    await sleep(20);
    open = await stillOpen();
  }
  if (open.length) {
    const ss = spawnSync("ss", ["-ltnpH"], { encoding: "utf8" }).stdout ?? "";
    const who = ss.split("\n").filter((l) => open.some((p) => l.includes(`:${p} `)));
    throw new Error(
      `${what}: ports ${open.join(", ")} still answer after stop:\n${who.join("\n")}`,
    );
  }
}

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

/** Waits until every pid is gone; SIGKILLs (and reports) what is still there after `ms`. */
async function awaitGone(pids: number[], what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (pids.some(alive) && Date.now() < deadline) await sleep(10);
  const left = pids.filter(alive);
  if (left.length) {
    log(`warning: ${what}: pids ${left.join(", ")} still alive after ${ms} ms; killing them`);
    for (const pid of left) kill(pid, "SIGKILL");
  }
}

function kill(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    /* gone */
  }
}

/**
 * What marks this run's processes: CARAVAN_BENCH_RUN, a CARAVAN_HOME under HOMES (the CLI and
 * the daemons) or the id of one of those homes (apps get it instead of CARAVAN_HOME).
 */
function runNeedles(): string[] {
  let homes: string[] = [];
  try {
    homes = readdirSync(HOMES).map((h) => `${homeMark(join(HOMES, h))}\0`);
  } catch {
    /* no home yet */
  }
  return [`CARAVAN_BENCH_RUN=${WORK}\0`, `CARAVAN_HOME=${HOMES}/`, ...homes];
}

/** Live processes started for this run: marked, or belonging to one of its CARAVAN_HOMEs. */
function processesOfRun(): number[] {
  const needles = runNeedles();
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, "latin1") + "\0";
      if (needles.some((n) => environ.includes(n)) && alive(Number(entry)))
        pids.push(Number(entry));
    } catch {
      /* exited, or not ours */
    }
  }
  return pids;
}

interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  t0: number;
  t1: number;
}

/** Runs `caravan <args>` against `home` (as a user would, through bin/caravan.js). */
function caravan(args: string[], home: string, timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((res, rej) => {
    const t0 = now();
    const child = spawn(NODE, [BIN, ...args], {
      cwd: WORK,
      env: { ...CHILD_ENV, CARAVAN_HOME: home, NO_COLOR: "1" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    let t1 = 0;
    child.stdout.on("data", (b: Buffer) => (stdout += b));
    child.stderr.on("data", (b: Buffer) => (stderr += b));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.once("exit", () => (t1 = now()));
    child.once("error", rej);
    child.once("close", (code) => {
      clearTimeout(timer);
      res({ code, stdout, stderr, t0, t1 });
    });
  });
}

/** Wall time of a plain command (for the CLI-start breakdown). */
function timeCommand(argv: string[], env: NodeJS.ProcessEnv = CHILD_ENV): Promise<number> {
  return new Promise((res, rej) => {
    const t0 = now();
    const child = spawn(argv[0]!, argv.slice(1), { cwd: ROOT, env, stdio: "ignore" });
    child.once("error", rej);
    child.once("exit", (code) =>
      code === 0 ? res(now() - t0) : rej(new Error(`${argv.join(" ")} exited ${code}`)),
    );
  });
}

/** Fraction of all CPUs busy over `ms` (every process on the machine, from /proc/stat). */
async function busyFraction(ms = 1000): Promise<number> {
  const sample = () => {
    const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1);
    const n = f.map(Number);
    const total = n.slice(0, 8).reduce((a, b) => a + b, 0);
    return { idle: n[3]! + n[4]!, total };
  };
  const a = sample();
  await sleep(ms);
  const b = sample();
  return 1 - (b.idle - a.idle) / Math.max(1, b.total - a.total);
}

/**
 * Other work on the machine (tests, other benchmarks) distorts start-up times. Before each
 * measurement, waits (up to `QUIET_WAIT_S`) until less than `QUIET` of the CPUs are busy.
 */
async function waitForQuiet(): Promise<number> {
  const deadline = Date.now() + QUIET_WAIT_S * 1000;
  let busy = await busyFraction(500);
  while (busy > QUIET && Date.now() < deadline) busy = await busyFraction(500);
  return busy;
}

const CLK_TCK = Number(spawnSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).stdout) || 100;

/** This process and its ancestors (npx, tsx): not foreign. */
const SELF_AND_ANCESTORS = (() => {
  const pids = new Set<number>();
  for (let pid = process.pid; pid > 1 && !pids.has(pid);) {
    pids.add(pid);
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      pid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    } catch {
      break;
    }
  }
  return pids;
})();
const oursCache = new Map<string, boolean>();

/**
 * CPU time (ms) used so far by every live process that is not the benchmark's, keyed by pid
 * and start time. Children those processes reaped count too (cutime, cstime), so a test
 * runner's short-lived CLI processes are seen through the runner.
 */
function foreignCpu(): Map<string, number> {
  const out = new Map<string, number>();
  const needles = runNeedles();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    try {
      const f = readFileSync(`/proc/${pid}/stat`, "utf8");
      const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
      const key = `${pid}/${rest[19]}`;
      let ours = oursCache.get(key);
      if (ours === undefined) {
        let environ = "";
        try {
          environ = readFileSync(`/proc/${pid}/environ`, "latin1") + "\0";
        } catch {
          /* not readable: not ours */
        }
        ours = SELF_AND_ANCESTORS.has(pid) || needles.some((n) => environ.includes(n));
        oursCache.set(key, ours);
      }
      if (ours) continue;
      // utime, stime, cutime, cstime (fields 14-17); not init's reaped children: orphans
      // of the benchmark's own process groups (concurrently's shells) end up there
      const fields = pid === 1 ? [11, 12] : [11, 12, 13, 14];
      const ticks = fields.reduce((a, i) => a + Number(rest[i]), 0);
      out.set(key, (ticks * 1000) / CLK_TCK);
    } catch {
      /* exited meanwhile */
    }
  }
  return out;
}

function foreignCpuBetween(a: Map<string, number>, b: Map<string, number>): number {
  let ms = 0;
  for (const [key, t] of b) {
    const before = a.get(key);
    if (before !== undefined) ms += t - before;
  }
  return ms;
}

/**
 * Runs a measurement on a quiet machine: waits for quiet, runs it, and runs it again (after
 * `reset`) when other processes used more than `MAX_FOREIGN` of a CPU meanwhile.
 */
async function measured(
  what: string,
  run: () => Promise<RunRecord>,
  reset?: () => Promise<void>,
): Promise<RunRecord> {
  for (let attempt = 0; ; attempt++) {
    await waitForQuiet();
    const before = foreignCpu();
    let r: RunRecord;
    try {
      r = await run();
    } catch (e) {
      // On a shared machine a fixed port can be taken meanwhile, or a start time out.
      if (attempt >= RETRIES) throw e;
      log(`  ${what} failed; measuring again: ${(e as Error).message.slice(0, 2000)}`);
      await reset?.();
      continue;
    }
    r.foreign = foreignCpuBetween(before, foreignCpu()) / (now() - r.t0);
    r.attempts = attempt + 1;
    if (r.foreign <= MAX_FOREIGN || attempt >= RETRIES) return r;
    log(`  ${what}: other processes used ${f2(r.foreign)} of a CPU meanwhile; measuring again`);
    await reset?.();
  }
}

// --- variants ---

interface RunRecord {
  scenario: string;
  variant: string;
  /** Start of the variant (before the first spawn / the CLI's spawn). */
  t0: number;
  /** When the variant knows the whole graph is up (baseline: last "listening" line read;
   * concurrently: the last app's listen; caravan: the CLI's exit). */
  end: number;
  events: AppEvent[];
  /** CPU used by other processes meanwhile, as a fraction of one CPU (see `measured`). */
  foreign?: number;
  attempts?: number;
}

async function runBaseline(s: Scenario): Promise<RunRecord> {
  const events = join(EVENTS_DIR, `${s.id}-baseline.jsonl`);
  writeFileSync(events, "");
  const portList = await freePorts(s.apps.length);
  const ports = new Map(s.apps.map((a, i) => [a.name, portList[i]!]));
  const children: ChildProcess[] = [];
  const pending = new Map(s.apps.map((a) => [a.name, a.deps.length]));
  const listening = new Set<string>();
  const t0 = now();
  let end = 0;
  try {
    await new Promise<void>((res, rej) => {
      const timer = setTimeout(() => rej(new Error(`baseline ${s.id} timed out`)), 60_000);
      const start = (a: AppDef) => {
        const child = spawn(
          NODE,
          [PROGRAM[s.flavour], String(ports.get(a.name)), String(a.delayMs), a.name, events],
          // In its own session, as caravan's supervisor starts apps: with the kernel's
          // autogroup scheduling, a session is one scheduling group, so 20 apps sharing
          // the bench's session would get one group's CPU share when the machine is busy.
          { cwd: WORK, env: CHILD_ENV, stdio: ["ignore", "pipe", "inherit"], detached: true },
        );
        children.push(child);
        let buf = "";
        child.stdout!.on("data", (b: Buffer) => {
          buf += b;
          if (!listening.has(a.name) && buf.includes(`listening ${a.name}\n`)) ready(a.name);
        });
        child.once("exit", (code) => {
          if (!listening.has(a.name)) rej(new Error(`baseline: ${a.name} exited ${code}`));
        });
      };
      const ready = (name: string) => {
        listening.add(name);
        if (listening.size === s.apps.length) {
          end = now();
          clearTimeout(timer);
          res();
          return;
        }
        for (const a of s.apps) {
          if (!a.deps.includes(name)) continue;
          const left = pending.get(a.name)! - 1;
          pending.set(a.name, left);
          if (left === 0) start(a);
        }
      };
      for (const a of s.apps) if (a.deps.length === 0) start(a);
    });
  } finally {
    for (const c of children) c.kill("SIGTERM");
    await awaitGone(
      children.map((c) => c.pid!),
      `baseline ${s.id}`,
    );
    await checkPortsClosed(portList, `baseline ${s.id}`);
  }
  const got = readEvents(events);
  return { scenario: s.id, variant: "baseline", t0, end, events: [...got.values()] };
}

async function runConcurrently(s: Scenario, intervalMs?: number): Promise<RunRecord> {
  const variant = intervalMs ? `concurrently-i${intervalMs}` : "concurrently";
  const events = join(EVENTS_DIR, `${s.id}-${variant}.jsonl`);
  writeFileSync(events, "");
  const portList = await freePorts(s.apps.length);
  const port = new Map(s.apps.map((a, i) => [a.name, portList[i]!]));
  // concurrently strips a command's wrapping quotes, so arguments go unquoted: the paths are
  // ours (mkdtemp under the temp dir) and checked to need no quoting.
  const words = (xs: string[]) => {
    for (const x of xs) if (!/^[\w./:@+-]+$/.test(x)) throw new Error(`cannot pass ${x} unquoted`);
    return xs.join(" ");
  };
  const commands = s.apps.map((a) => {
    const run = words([
      NODE,
      PROGRAM[s.flavour],
      String(port.get(a.name)),
      String(a.delayMs),
      a.name,
      events,
    ]);
    if (!a.deps.length) return run;
    const interval = intervalMs ? `-i ${intervalMs} ` : "";
    const targets = a.deps.map((d) => `tcp:127.0.0.1:${port.get(d)}`).join(" ");
    return `wait-on ${interval}${targets} && ${run}`;
  });
  const t0 = now();
  const child = spawn(join(ROOT, "node_modules/.bin/concurrently"), ["--raw", ...commands], {
    cwd: WORK,
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: {
      ...CHILD_ENV,
      PATH: `${join(ROOT, "node_modules/.bin")}:${process.env.PATH}`,
    },
  });
  let output = "";
  const keep = (b: Buffer) => (output = (output + b).slice(-4000));
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  const exited = new Promise((r) => child.once("exit", r));
  let got = readEvents(events);
  try {
    const deadline = Date.now() + 60_000;
    while (got.size < s.apps.length) {
      const missing = () => s.apps.filter((a) => !got.has(a.name)).map((a) => a.name);
      if (Date.now() > deadline || child.exitCode !== null)
        throw new Error(
          `${variant} ${s.id}: ${child.exitCode === null ? "timed out" : `exited ${child.exitCode}`}; not listening: ${missing().join(", ")}; output:\n${output}`,
        );
      await sleep(5);
      got = readEvents(events);
    }
  } finally {
    // concurrently, its shells, wait-on and the apps share one process group.
    kill(-child.pid!, "SIGTERM");
    await Promise.race([exited, sleep(5000)]);
    kill(-child.pid!, "SIGKILL");
    await awaitGone(
      [...got.values()].map((e) => e.pid),
      `${variant} ${s.id}`,
    );
    await checkPortsClosed(portList, `${variant} ${s.id}`);
  }
  const end = Math.max(...[...got.values()].map((e) => e.listen));
  return { scenario: s.id, variant, t0, end, events: [...got.values()] };
}

function parseDeploy(r: CliResult, expect: string, what: string): void {
  let statuses: string[] = [];
  try {
    const json = JSON.parse(r.stdout) as { deployments: { status: string }[] };
    statuses = json.deployments.map((d) => d.status);
  } catch {
    /* reported below */
  }
  if (r.code !== 0 || !statuses.length || statuses.some((x) => x !== expect))
    throw new Error(
      `${what}: exit ${r.code}, statuses ${statuses.join(",")}\n${r.stdout}\n${r.stderr}`,
    );
}

async function runCaravan(
  s: Scenario,
  variant:
    "caravan-cold" | "caravan-warm" | "caravan-nowarm" | "caravan-unchanged" | "caravan-force",
  home: string,
): Promise<RunRecord> {
  writeFileSync(s.caravanEvents, "");
  const args = ["deploy", s.caravanFile, "--json"];
  if (variant === "caravan-force") args.push("--force");
  if (variant === "caravan-nowarm") args.push("--no-warm");
  const r = await caravan(args, home);
  try {
    parseDeploy(r, variant === "caravan-unchanged" ? "unchanged" : "ready", `${variant} ${s.id}`);
  } catch (e) {
    const daemonLog = join(home, "daemon.log");
    if (existsSync(daemonLog))
      log(`daemon log:\n${readFileSync(daemonLog, "utf8").split("\n").slice(-40).join("\n")}`);
    throw e;
  }
  const got = readEvents(s.caravanEvents);
  if (variant !== "caravan-unchanged" && got.size !== s.apps.length)
    throw new Error(`${variant} ${s.id}: ${got.size} of ${s.apps.length} apps wrote events`);
  for (const e of got.values()) Object.assign(e, launchLines(home, e.name, r.t0));
  return { scenario: s.id, variant, t0: r.t0, end: r.t1, events: [...got.values()] };
}

/**
 * The last "loading" and "starting" lines the control plane wrote to an app's log since `t0`
 * (ISO times, ms): when its process was spawned or assigned, and when it was told to start.
 */
function launchLines(
  home: string,
  app: string,
  t0: number,
): { loading?: number; starting?: number } {
  const out: { loading?: number; starting?: number } = {};
  let text: string;
  try {
    text = readFileSync(join(home, "logs/default/development", `${app}.log`), "utf8");
  } catch {
    return out;
  }
  for (const m of text.matchAll(/^\[caravan\] (\S+) (loading|starting) (\S+)/gm)) {
    const at = Date.parse(m[1]!);
    if (m[3] === app && at >= t0 - 1) out[m[2] as "loading" | "starting"] = at;
  }
  return out;
}

interface PoolStats {
  size: number;
  idle: number;
  warming: number;
  rssBytes: number;
  rssPerProcess: number;
  preload: string[];
  pids: number[];
}

/** The warm pool of `home`'s daemon (its health answer). */
async function poolOf(home: string): Promise<PoolStats> {
  const { url } = JSON.parse(readFileSync(join(home, "daemon.json"), "utf8")) as { url: string };
  const token = readFileSync(join(home, "token"), "utf8").trim();
  const res = await fetch(`${url}/v1/health`, { headers: { authorization: `Bearer ${token}` } });
  return ((await res.json()) as { warmPool: PoolStats }).warmPool;
}

/** Waits until `home`'s pool is full (a deploy then finds a warm process for every app). */
async function poolFull(home: string): Promise<PoolStats> {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const p = await poolOf(home);
    if (p.size > 0 && p.idle >= p.size && p.warming === 0) return p;
    if (Date.now() > deadline)
      throw new Error(`warm pool of ${home} not full: ${JSON.stringify(p)}`);
    await sleep(100);
  }
}

/** CPU time (ms) a set of processes used so far, from /proc/<pid>/stat (utime + stime). */
function cpuMsOf(pids: number[]): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]);
    } catch {
      /* gone */
    }
  }
  return (ticks * 1000) / CLK_TCK;
}

/** What the full, idle pool costs: memory, and CPU over `ms` of idling. */
async function idlePoolCost(home: string, ms = 10_000) {
  const p = await poolFull(home);
  const before = cpuMsOf(p.pids);
  await sleep(ms);
  const cpuMs = cpuMsOf(p.pids) - before;
  return { ...p, cpuShare: cpuMs / ms, idleMs: ms };
}

async function deleteAll(s: Scenario, home: string): Promise<void> {
  const r = await caravan(["delete", ...s.apps.map((a) => a.name), "--cascade", "--json"], home);
  if (r.code !== 0) throw new Error(`delete ${s.id}: ${r.stderr}`);
}

async function stopServer(home: string): Promise<void> {
  await caravan(["server", "stop"], home);
}

async function runColdCaravan(s: Scenario, n: string): Promise<RunRecord> {
  const home = join(HOMES, `cold-${s.id}-${n}`);
  try {
    return await runCaravan(s, "caravan-cold", home);
  } finally {
    await stopServer(home);
    const left = processesOfRun().filter((pid) => {
      try {
        const environ = readFileSync(`/proc/${pid}/environ`, "latin1") + "\0";
        return (
          environ.includes(`CARAVAN_HOME=${home}\0`) || environ.includes(`${homeMark(home)}\0`)
        );
      } catch {
        return false;
      }
    });
    await awaitGone(left, `cold home ${home}`, 5000);
    rmSync(home, { recursive: true, force: true });
  }
}

// --- metrics ---

const median = (xs: number[]) => {
  const v = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const m = Math.floor(v.length / 2);
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
};
const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : NaN);

interface Timeline {
  total: number;
  /** First app's process start, from t0. */
  firstStart: number;
  /** When the last app without dependencies listened, from t0 (the first wave is up). */
  firstWave: number;
  /**
   * Mean, over apps with dependencies, of listen − (last dependency's listen): what each
   * dependent adds to the critical path. The baseline's is the app's own start-up + ~1 ms.
   */
  step: number;
  /** Mean, over apps with dependencies, of process start − (last dependency's listen);
   * negative when the app's process was started (preloaded) before its dependencies. */
  gap: number;
  /** Spread of the process starts of the apps without dependencies (fan-out). */
  skew: number;
  /** Last listen, from t0. */
  lastListen: number;
  /** end − last listen: how long after the graph is up the orchestrator says so. */
  tail: number;
  /** Own start-up (listen − process start) of the apps without dependencies (they wait for
   * nothing), split: node boot + static imports, ... */
  boot: number;
  /** ... the module's declarations, ... */
  declare: number;
  /** ... from there to listening (the app's sleep; for caravan's runtime, also the
   * loaded/start handshake and `serveOn`) ... */
  serve: number;
  /** ... and in all. */
  ownStartup: number;
  /** caravan: the first app's "loading" (spawned or assigned), from t0: the CLI's and the
   * control plane's cost before any app runs (plan, snapshot, requests) ... */
  firstAssigned: number;
  /** ... the last app's "loading", from t0 ... */
  lastAssigned: number;
  /** ... mean over the apps without dependencies: "loading" → "starting" (loading its code,
   * waiting for a start slot) ... */
  loadToStart: number;
  /** ... and "starting" → its listen (start hooks: the app's sleep; serveOn). */
  startToListen: number;
}

function timeline(r: RunRecord, s: Scenario): Timeline {
  const total = r.end - r.t0;
  const t: Timeline = {
    total,
    firstStart: NaN,
    firstWave: NaN,
    step: NaN,
    gap: NaN,
    skew: NaN,
    lastListen: NaN,
    tail: NaN,
    boot: NaN,
    declare: NaN,
    serve: NaN,
    ownStartup: NaN,
    firstAssigned: NaN,
    lastAssigned: NaN,
    loadToStart: NaN,
    startToListen: NaN,
  };
  if (!r.events.length) return t;
  const by = new Map(r.events.map((e) => [e.name, e]));
  const steps: number[] = [];
  const gaps: number[] = [];
  for (const a of s.apps) {
    if (!a.deps.length) continue;
    const deps = Math.max(...a.deps.map((d) => by.get(d)!.listen));
    steps.push(by.get(a.name)!.listen - deps);
    gaps.push(by.get(a.name)!.start - deps);
  }
  const roots = s.apps.filter((a) => !a.deps.length).map((a) => by.get(a.name)!);
  const lastListen = Math.max(...r.events.map((e) => e.listen));
  return {
    total,
    firstStart: Math.min(...r.events.map((e) => e.start)) - r.t0,
    firstWave: Math.max(...roots.map((e) => e.listen)) - r.t0,
    step: mean(steps),
    gap: mean(gaps),
    skew: Math.max(...roots.map((e) => e.start)) - Math.min(...roots.map((e) => e.start)),
    lastListen: lastListen - r.t0,
    tail: r.end - lastListen,
    boot: mean(roots.map((e) => e.body - e.start)),
    declare: mean(roots.map((e) => e.declared - e.body)),
    serve: mean(roots.map((e) => e.listen - e.declared)),
    ownStartup: mean(roots.map((e) => e.listen - e.start)),
    firstAssigned: Math.min(...r.events.map((e) => e.loading ?? NaN)) - r.t0,
    lastAssigned: Math.max(...r.events.map((e) => e.loading ?? NaN)) - r.t0,
    loadToStart: mean(roots.map((e) => (e.starting ?? NaN) - (e.loading ?? NaN))),
    startToListen: mean(roots.map((e) => e.listen - (e.starting ?? NaN))),
  };
}

/** caravan's readiness probe: attempts at 0, 10, 30, 70, 150, 310, 630, 1130, ... ms. */
function probeSchedule(first: number, cap: number): number[] {
  const points = [0];
  for (let d = first, t = 0; t < 60_000; d = Math.min(d * 2, cap)) points.push((t += d));
  return points;
}
const CURRENT_PROBE = probeSchedule(10, 500);
const SCHEDULES: Record<string, number[]> = {
  "current (10 ms doubling, cap 500)": CURRENT_PROBE,
  "cap 50 ms": probeSchedule(10, 50),
  "fixed 10 ms": probeSchedule(10, 10),
};
/** Expected wait between an app listening `s` ms after its start and the probe noticing. */
const probeWait = (schedule: number[], s: number) => schedule.find((p) => p >= s)! - s;

// --- breakdown probes ---

interface Breakdown {
  nodeBoot: number;
  nodeSourceMaps: number;
  importFastify: number;
  importFastifySourceMaps: number;
  tsxRegister: number;
  cliVersion: number;
  plan: Record<string, number>;
  serverStatus: number;
  daemonStart: number;
  daemonStop: number;
  build: { importMs: number; runtimeCold: number; runtimeWarm: number; snapshot: number[] };
  http: { health: number; status: number };
  probe: {
    delayMs: number;
    caravan: { prespawn: number; own: number; detect: number; predicted: number };
    ideal: { prespawn: number; own: number; detect: number; predicted: number };
  }[];
}

async function breakdown(scenarios: Scenario[], reps: number): Promise<Breakdown> {
  const med = async (fn: () => Promise<number>, n = reps) => {
    const xs: number[] = [];
    for (let i = 0; i < n; i++) {
      await waitForQuiet();
      xs.push(await fn());
    }
    return median(xs);
  };
  log("breakdown: CLI start");
  const nodeBoot = await med(() => timeCommand([NODE, "-e", "0"]));
  const nodeSourceMaps = await med(() => timeCommand([NODE, "--enable-source-maps", "-e", "0"]));
  const fastify = ["--input-type=module", "-e", 'await import("fastify");'];
  const importFastify = await med(() => timeCommand([NODE, ...fastify]));
  const importFastifySourceMaps = await med(() =>
    timeCommand([NODE, "--enable-source-maps", ...fastify]),
  );
  const tsxRegister = await med(() =>
    timeCommand([
      NODE,
      "--input-type=module",
      "-e",
      'const { register } = await import("tsx/esm/api"); register();',
    ]),
  );
  const cliVersion = await med(() => timeCommand([NODE, BIN, "--version"]));
  const plan: Record<string, number> = {};
  for (const s of scenarios)
    plan[s.id] = await med(async () => {
      const r = await caravan(["plan", s.caravanFile, "--json"], WARM_HOME);
      if (r.code !== 0) throw new Error(`plan ${s.id}: ${r.stderr}`);
      return r.t1 - r.t0;
    });
  const serverStatus = await med(async () => {
    const r = await caravan(["server", "status", "--json"], WARM_HOME);
    return r.t1 - r.t0;
  });

  log("breakdown: daemon start/stop");
  const starts: number[] = [];
  const stops: number[] = [];
  for (let i = 0; i < reps; i++) {
    const home = join(HOMES, `daemon-${i}`);
    await waitForQuiet();
    const r = await caravan(["server", "start", "--json"], home);
    if (r.code !== 0) throw new Error(`server start: ${r.stderr}`);
    starts.push(r.t1 - r.t0);
    const st = await caravan(["server", "stop"], home);
    stops.push(st.t1 - st.t0);
    rmSync(home, { recursive: true, force: true });
  }

  log("breakdown: esbuild (runtime build, snapshot) in fresh processes");
  const builds: Breakdown["build"][] = [];
  for (let i = 0; i < Math.min(reps, 5); i++) {
    await waitForQuiet();
    builds.push(await buildProbe(scenarios, i));
  }
  const build = {
    importMs: median(builds.map((b) => b.importMs)),
    runtimeCold: median(builds.map((b) => b.runtimeCold)),
    runtimeWarm: median(builds.map((b) => b.runtimeWarm)),
    snapshot: scenarios.map((_, j) => median(builds.map((b) => b.snapshot[j]!))),
  };

  log("breakdown: HTTP round trips to the daemon");
  const { ensureDaemon, homePaths } = await internals();
  const daemon = await ensureDaemon(homePaths(WARM_HOME));
  const rtt = async (path: string) => {
    const xs: number[] = [];
    for (let i = 0; i < 60; i++) {
      const t = now();
      const res = await fetch(`${daemon.url}${path}`, {
        headers: { authorization: `Bearer ${daemon.token}` },
      });
      await res.arrayBuffer();
      if (i >= 10) xs.push(now() - t);
    }
    return median(xs);
  };
  const http = {
    health: await rtt("/v1/health"),
    status: await rtt("/v1/status?project=default&domain=development"),
  };

  log("breakdown: supervisor spawn + readiness probe vs an ideal spawn");
  const probe = await probeSweep(reps);
  return {
    nodeBoot,
    nodeSourceMaps,
    importFastify,
    importFastifySourceMaps,
    tsxRegister,
    cliVersion,
    plan,
    serverStatus,
    daemonStart: median(starts),
    daemonStop: median(stops),
    build,
    http,
    probe,
  };
}

/** In a fresh process (as the CLI does on every deploy): compile the runtime, then snapshot. */
async function buildProbe(scenarios: Scenario[], i: number): Promise<Breakdown["build"]> {
  const script = join(WORK, "probe-build.mjs");
  const dir = join(WORK, `probe-build-${i}`);
  writeFileSync(
    script,
    `import { register } from "tsx/esm/api";
register();
const t = () => performance.now();
const [dir, files] = [process.argv[2], JSON.parse(process.argv[3])];
let t0 = t();
const { buildRuntime } = await import(${JSON.stringify(join(ROOT, "src/backends/runtime-build.ts"))});
const { snapshotCode } = await import(${JSON.stringify(join(ROOT, "src/backends/snapshot.ts"))});
const { loadEnvironments } = await import(${JSON.stringify(join(ROOT, "src/sdk/loader.ts"))});
const importMs = t() - t0;
t0 = t(); await buildRuntime(dir + "/runtime"); const runtimeCold = t() - t0;
t0 = t(); await buildRuntime(dir + "/runtime2"); const runtimeWarm = t() - t0;
const snapshot = [];
for (const f of files) {
  // As a deploy does: given the environments (an app of its own module is also bundled alone).
  const { environments } = await loadEnvironments(f);
  await snapshotCode(f, { bundles: dir + "/bundles", runtime: dir + "/runtime" }, environments);
  t0 = t(); await snapshotCode(f, { bundles: dir + "/bundles", runtime: dir + "/runtime" }, environments); snapshot.push(t() - t0);
}
process.stdout.write(JSON.stringify({ importMs, runtimeCold, runtimeWarm, snapshot }));
process.exit(0);
`,
  );
  const out = await new Promise<string>((res, rej) => {
    let text = "";
    const child = spawn(NODE, [script, dir, JSON.stringify(scenarios.map((s) => s.caravanFile))], {
      cwd: WORK,
      env: CHILD_ENV,
      stdio: ["ignore", "pipe", "inherit"],
    });
    child.stdout.on("data", (b: Buffer) => (text += b));
    child.once("exit", (code) => (code === 0 ? res(text) : rej(new Error(`build probe ${code}`))));
  });
  rmSync(dir, { recursive: true, force: true });
  return JSON.parse(out) as Breakdown["build"];
}

/**
 * The control plane in this process (no CLI, no HTTP): `ControlPlane.deploy` of one command
 * app that sleeps D ms, against spawning the same program and reading its stdout.
 */
async function probeSweep(reps: number): Promise<Breakdown["probe"]> {
  const home = join(HOMES, "probe");
  const { ControlPlane, homePaths, AppEnvironment } = await internals();
  const plane = new ControlPlane(homePaths(home));
  const events = join(EVENTS_DIR, "probe.jsonl");
  const out: Breakdown["probe"] = [];
  try {
    for (const delayMs of [0, 25, 50, 100, 150, 200, 300, 500]) {
      const c: { prespawn: number; own: number; detect: number; predicted: number }[] = [];
      const b: typeof c = [];
      for (let i = 0; i < reps; i++) {
        const name = `probe-${delayMs}-${i}`;
        await waitForQuiet();
        // caravan: ControlPlane.deploy resolves when the readiness probe passed
        writeFileSync(events, "");
        const spec = new AppEnvironment({
          name,
          command: [NODE, PROGRAM.http],
          args: ["$PORT", String(delayMs), name, events],
          requiresAuth: false,
        }).spec();
        const t0 = now();
        await plane.deploy({
          scope: { project: "bench", domain: "probe" },
          name,
          kind: "app",
          spec,
          revision: `r${i}`,
          code: { hash: "none", entry: PROGRAM.http, sourceRoot: WORK, runtime: "" },
          inputs: {},
          dependencies: {},
        });
        const t1 = now();
        const e = readEvents(events).get(name)!;
        c.push({
          prespawn: e.start - t0,
          own: e.listen - e.start,
          detect: t1 - e.listen,
          // the probe starts right after the spawn, `prespawn` before the process's clock
          predicted: probeWait(CURRENT_PROBE, e.listen - t0),
        });
        // ideal: spawn and read "listening" from stdout
        writeFileSync(events, "");
        const [port] = await freePorts(1);
        const s0 = now();
        const child = spawn(NODE, [PROGRAM.http, String(port), String(delayMs), name, events], {
          env: CHILD_ENV,
          detached: true,
          stdio: ["ignore", "pipe", "inherit"],
        });
        const s1 = await new Promise<number>((res) => {
          let buf = "";
          child.stdout.on("data", (d: Buffer) => {
            buf += d;
            if (buf.includes("listening")) res(now());
          });
        });
        const f = readEvents(events).get(name)!;
        b.push({
          prespawn: f.start - s0,
          own: f.listen - f.start,
          detect: s1 - f.listen,
          predicted: 0,
        });
        child.kill("SIGTERM");
        await awaitGone([child.pid!], "probe baseline");
      }
      const agg = (xs: typeof c) => ({
        prespawn: median(xs.map((x) => x.prespawn)),
        own: median(xs.map((x) => x.own)),
        detect: median(xs.map((x) => x.detect)),
        predicted: median(xs.map((x) => x.predicted)),
      });
      out.push({ delayMs, caravan: agg(c), ideal: agg(b) });
    }
  } finally {
    await plane.shutdown({ stopApps: true });
  }
  return out;
}

// --- report ---

const f0 = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : "–");
const f1 = (x: number) => (Number.isFinite(x) ? x.toFixed(1) : "–");
const f2 = (x: number) => (Number.isFinite(x) ? x.toFixed(2) : "–");

function report(scenarios: Scenario[], records: RunRecord[], b: Breakdown | undefined): string {
  const lines: string[] = [];
  const p = (s = "") => lines.push(s);
  const variants = [
    "baseline",
    "concurrently",
    "concurrently-i20",
    "caravan-cold",
    "caravan-warm",
    "caravan-nowarm",
    "caravan-force",
    "caravan-unchanged",
  ];
  const tl = (s: Scenario, v: string) =>
    records.filter((r) => r.scenario === s.id && r.variant === v).map((r) => timeline(r, s));
  const med = (s: Scenario, v: string, k: keyof Timeline) => median(tl(s, v).map((t) => t[k]));

  p("#### Wall time until the whole graph is up (median ms, ratio to the baseline of this run)");
  p();
  p(`| scenario | ${variants.join(" | ")} |`);
  p(`|---|${variants.map(() => "---:").join("|")}|`);
  for (const s of scenarios) {
    const base = med(s, "baseline", "total");
    const cells = variants.map((v) => {
      const m = med(s, v, "total");
      return v === "baseline" ? f0(m) : `${f0(m)} (${f2(m / base)}×)`;
    });
    p(`| ${s.id} | ${cells.join(" | ")} |`);
  }
  p();
  p("n = runs per cell: " + variants.map((v) => `${v} ${tl(scenarios[0]!, v).length}`).join(", "));
  p();
  p("#### Timeline from the apps' own timestamps (median ms)");
  p();
  p(
    "| scenario | variant | first app process starts | apps without deps all listen | step: dep listens → dependent listens | gap: dep listens → dependent's process starts | leaf start skew | last listen | tail: last listen → done | total |",
  );
  p("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const s of scenarios)
    for (const v of variants.filter((x) => x !== "caravan-unchanged"))
      p(
        `| ${s.id} | ${v} | ${f0(med(s, v, "firstStart"))} | ${f0(med(s, v, "firstWave"))} | ${f1(med(s, v, "step"))} | ${f1(med(s, v, "gap"))} | ${s.graph === "fanout20" ? f0(med(s, v, "skew")) : "–"} | ${f0(med(s, v, "lastListen"))} | ${f1(med(s, v, "tail"))} | ${f0(med(s, v, "total"))} |`,
      );
  p();
  p("#### Where a caravan deploy's time goes (median ms; from the control plane's log lines)");
  p();
  p(
    "| scenario | variant | CLI start → first app assigned/spawned | → last app assigned/spawned | apps without deps: assigned → told to start | told to start → listens | last listen → CLI exits | total |",
  );
  p("|---|---|---:|---:|---:|---:|---:|---:|");
  for (const s of scenarios)
    for (const v of variants.filter((x) => x.startsWith("caravan-") && x !== "caravan-unchanged"))
      if (tl(s, v).length)
        p(
          `| ${s.id} | ${v} | ${f0(med(s, v, "firstAssigned"))} | ${f0(med(s, v, "lastAssigned"))} | ${f1(med(s, v, "loadToStart"))} | ${f1(med(s, v, "startToListen"))} | ${f1(med(s, v, "tail"))} | ${f0(med(s, v, "total"))} |`,
        );
  p();
  p("#### Caravan's overhead (steady state: caravan-warm − baseline, medians, ms)");
  p();
  p(
    "Δ total ≈ Δ until the apps without dependencies listen + (dependents on the critical path × Δ step) + Δ tail.",
  );
  p();
  p(
    "| scenario | Δ total | Δ until apps without deps listen | dependents on critical path | Δ step per dependent app | Δ tail | Δ total / apps on critical path | per dependent app ≤ 50 ms? |",
  );
  p("|---|---:|---:|---:|---:|---:|---:|:---:|");
  for (const s of scenarios) {
    const d = (k: keyof Timeline) => med(s, "caravan-warm", k) - med(s, "baseline", k);
    const dependents = s.criticalApps - 1;
    p(
      `| ${s.id} | ${f0(d("total"))} | ${f0(d("firstWave"))} | ${dependents} | ${f1(d("step"))} | ${f0(d("tail"))} | ${f0(d("total") / s.criticalApps)} | ${d("step") <= 50 ? "yes" : "no"} |`,
    );
  }
  p();
  p("#### Own start-up of the apps without dependencies, split (median of the per-run mean, ms)");
  p();
  p(
    "| scenario | variant | process start → module body (node boot + imports) | declarations | → listening (sleep D, + handshake for caravan's runtime) | own start-up |",
  );
  p("|---|---|---:|---:|---:|---:|");
  for (const s of scenarios)
    for (const v of ["baseline", "concurrently", "caravan-warm"])
      p(
        `| ${s.id} | ${v} | ${f1(med(s, v, "boot"))} | ${f1(med(s, v, "declare"))} | ${f1(med(s, v, "serve"))} | ${f1(med(s, v, "ownStartup"))} |`,
      );
  p();
  p(
    "#### Readiness probe of command apps: wait predicted from each app's measured start-up (warm runs, mean ms per app)",
  );
  p();
  const cols = Object.keys(SCHEDULES);
  p(
    `| scenario | ${cols.join(" | ")} | measured Δ step (caravan − baseline) | Δ step not explained by the current probe |`,
  );
  p(`|---|${cols.map(() => "---:").join("|")}|---:|---:|`);
  for (const s of scenarios.filter((x) => x.flavour === "http")) {
    const runs = records.filter((r) => r.scenario === s.id && r.variant === "caravan-warm");
    const waits = Object.values(SCHEDULES).map((sched) =>
      median(runs.map((r) => mean(r.events.map((e) => probeWait(sched, e.listen - e.start))))),
    );
    const dStep = med(s, "caravan-warm", "step") - med(s, "baseline", "step");
    p(`| ${s.id} | ${waits.map(f1).join(" | ")} | ${f1(dStep)} | ${f1(dStep - waits[0]!)} |`);
  }
  const uniform = (sched: number[]) =>
    mean(Array.from({ length: 901 }, (_, i) => probeWait(sched, 100 + i)));
  p(
    `| any app ready 100–1000 ms after its start (uniform) | ${Object.values(SCHEDULES)
      .map((sched) => f1(uniform(sched)))
      .join(" | ")} | | |`,
  );
  p();
  if (!b) return lines.join("\n");
  p("#### Where the fixed cost goes (median ms)");
  p();
  p("| step | ms |");
  p("|---|---:|");
  p(`| \`node -e 0\` | ${f0(b.nodeBoot)} |`);
  p(
    `| \`node --enable-source-maps -e 0\` (how caravan starts its runtime) | ${f0(b.nodeSourceMaps)} |`,
  );
  p(`| node + \`import("fastify")\` | ${f0(b.importFastify)} |`);
  p(`| the same with \`--enable-source-maps\` | ${f0(b.importFastifySourceMaps)} |`);
  p(`| node + tsx \`register()\` | ${f0(b.tsxRegister)} |`);
  p(`| \`caravan --version\` (node + tsx + CLI modules) | ${f0(b.cliVersion)} |`);
  for (const [id, ms] of Object.entries(b.plan))
    p(`| \`caravan plan\` ${id} (+ load the user file, plan) | ${f0(ms)} |`);
  p(`| \`caravan server status\` (warm daemon: + 1 round trip) | ${f0(b.serverStatus)} |`);
  p(
    `| \`caravan server start\`, fresh home (daemon start, as seen by the CLI) | ${f0(b.daemonStart)} |`,
  );
  p(`| \`caravan server stop\` (no apps) | ${f0(b.daemonStop)} |`);
  p(
    `| import esbuild + snapshot/runtime-build modules (fresh process) | ${f0(b.build.importMs)} |`,
  );
  p(`| compile the runtime, first esbuild build of the process | ${f0(b.build.runtimeCold)} |`);
  p(`| compile the runtime again (esbuild service warm) | ${f0(b.build.runtimeWarm)} |`);
  scenarios.forEach((s, j) =>
    p(`| snapshot ${s.id} (esbuild warm, runtime cached) | ${f1(b.build.snapshot[j]!)} |`),
  );
  p(`| HTTP round trip GET /v1/health (keep-alive) | ${f2(b.http.health)} |`);
  p(`| HTTP round trip GET /v1/status | ${f2(b.http.status)} |`);
  for (const s of scenarios)
    p(
      `| \`caravan deploy\` ${s.id}, nothing changed | ${f0(med(s, "caravan-unchanged", "total"))} |`,
    );
  p();
  p("#### Supervisor in-process (ControlPlane.deploy of one command app) vs an ideal spawn");
  p();
  p(
    "| app sleeps (ms) | caravan: call → process start | caravan: own start-up | caravan: listen → deploy() resolves | of which the probe schedule predicts | ideal: spawn → process start | ideal: own start-up | ideal: listen → stdout line read |",
  );
  p("|---:|---:|---:|---:|---:|---:|---:|---:|");
  for (const r of b.probe)
    p(
      `| ${r.delayMs} | ${f1(r.caravan.prespawn)} | ${f0(r.caravan.own)} | ${f1(r.caravan.detect)} | ${f1(r.caravan.predicted)} | ${f1(r.ideal.prespawn)} | ${f0(r.ideal.own)} | ${f1(r.ideal.detect)} |`,
    );
  return lines.join("\n");
}

// --- main ---

async function cleanup(): Promise<void> {
  for (const dir of existsSync(HOMES) ? readdirSync(HOMES) : []) {
    const home = join(HOMES, dir);
    if (existsSync(join(home, "daemon.json"))) await stopServer(home).catch(() => undefined);
  }
  const deadline = Date.now() + 10_000;
  let left = processesOfRun();
  while (left.length && Date.now() < deadline) {
    await sleep(50);
    left = processesOfRun();
  }
  if (left.length) {
    log(`warning: processes left by this run: ${left.join(", ")}; killing them`);
    for (const pid of left) kill(pid, "SIGKILL");
  }
  if (KEEP) log(`kept ${WORK}`);
  else rmSync(WORK, { recursive: true, force: true });
}

/** The commit under test (and whether src/ or bin/ differ from it), or `--label`. */
function codeUnderTest(): string {
  const label = option("label");
  if (label) return label;
  const git = (...args: string[]) =>
    spawnSync("git", ["-C", ROOT, ...args], { encoding: "utf8" }).stdout?.trim() ?? "";
  const head = git("rev-parse", "--short", "HEAD");
  if (!head) return ROOT;
  const dirty = git("status", "--porcelain", "--", "src", "bin");
  return `${ROOT} at ${head}${dirty ? " with uncommitted changes in src/ or bin/" : ""}`;
}

async function main(): Promise<void> {
  const all: Scenario[] = [];
  for (const flavour of ["http", "fastify"] as const)
    for (const graph of ["chain5", "fanout20"] as const) {
      const id = `${flavour}-${graph}`;
      all.push({
        id,
        flavour,
        graph,
        apps: graph === "chain5" ? chain(flavour) : fanout(flavour),
        criticalApps: graph === "chain5" ? 5 : 2,
        caravanFile: join(WORK, `${id}.ts`),
        caravanEvents: join(EVENTS_DIR, `${id}-caravan.jsonl`),
      });
    }
  const scenarios = all.filter((s) => !ONLY || s.id.includes(ONLY));
  generateFiles(scenarios);
  const cpu = /model name\s*:\s*(.*)/.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1] ?? "?";
  const load0 = loadavg();
  log(`work dir ${WORK}; ${RUNS} rounds (+1 warm-up), ${COLD_RUNS} cold deploys per scenario`);

  const records: RunRecord[] = [];
  for (const home of [WARM_HOME, NOWARM_HOME]) {
    const started = await caravan(["server", "start", "--json"], home);
    if (started.code !== 0) throw new Error(`server start: ${started.stderr}`);
  }
  for (let round = 0; round <= RUNS; round++) {
    const keep = round > 0;
    for (const s of scenarios) {
      log(`round ${round}${keep ? "" : " (warm-up)"}: ${s.id}`);
      const rs: RunRecord[] = [];
      const runs = (v: string) => !VARIANTS || VARIANTS.includes(v);
      const m = async (v: string, run: () => Promise<RunRecord>, reset?: () => Promise<void>) => {
        if (runs(v)) rs.push(await measured(`${v} ${s.id}`, run, reset));
      };
      await m("baseline", () => runBaseline(s));
      await m("concurrently", () => runConcurrently(s));
      await m("concurrently-i20", () => runConcurrently(s, 20));
      // The pool refills only while nothing starts: wait for it, outside the timed part (the
      // warm-up round's first deploy is the one that tells the daemon which runtime to warm).
      await m(
        "caravan-warm",
        async () => {
          if (round > 0) await poolFull(WARM_HOME);
          return runCaravan(s, "caravan-warm", WARM_HOME);
        },
        () => deleteAll(s, WARM_HOME),
      );
      await m(
        "caravan-nowarm",
        () => runCaravan(s, "caravan-nowarm", NOWARM_HOME),
        () => deleteAll(s, NOWARM_HOME),
      );
      if (runs("caravan-nowarm")) await deleteAll(s, NOWARM_HOME);
      await m("caravan-unchanged", () => runCaravan(s, "caravan-unchanged", WARM_HOME));
      await m("caravan-force", async () => {
        if (round > 0) await poolFull(WARM_HOME);
        return runCaravan(s, "caravan-force", WARM_HOME);
      });
      if (["caravan-warm", "caravan-unchanged", "caravan-force"].some(runs))
        await deleteAll(s, WARM_HOME);
      let cold = 0;
      if (round === 0 || round <= COLD_RUNS)
        await m("caravan-cold", () => runColdCaravan(s, `${round}-${cold++}`));
      if (keep) records.push(...rs);
    }
  }
  // The pool fills once a deploy told the daemon what to warm.
  const warmed = !VARIANTS || ["caravan-warm", "caravan-force"].some((v) => VARIANTS.includes(v));
  const pool = warmed ? await idlePoolCost(WARM_HOME) : undefined;
  const b = BREAKDOWN ? await breakdown(scenarios, Math.max(3, Math.min(RUNS, 7))) : undefined;
  await stopServer(WARM_HOME);
  await stopServer(NOWARM_HOME);
  const load1 = loadavg();

  const head = [
    `Machine: ${availableParallelism()} CPUs (nproc), ${cpu}, Node ${process.version}, load average ${load0.map(f2).join(" ")} at start, ${load1.map(f2).join(" ")} at end.`,
    `Other processes on the machine used, during the kept measurements, a median of ${f2(median(records.map((r) => r.foreign ?? NaN)))} and at most ${f2(Math.max(...records.map((r) => r.foreign ?? 0)))} of one CPU; ${records.filter((r) => (r.attempts ?? 1) > 1).length} of ${records.length} measurements were repeated because of such load (limit ${MAX_FOREIGN} of a CPU, ${RETRIES} retries).`,
    `Code under test: ${codeUnderTest()}.`,
    `Command: \`npx tsx bench/deploy.ts ${process.argv.slice(2).join(" ")}\` (${RUNS} measured rounds after a warm-up round, ${COLD_RUNS} cold deploys per scenario).`,
    "",
  ].join("\n");
  const poolLine = !pool
    ? ""
    : `Idle warm pool of caravan-warm: ${pool.idle} processes, ${f1(pool.rssBytes / 2 ** 20)} MiB RSS in all (${f1(pool.rssPerProcess / 2 ** 20)} MiB each, preloading ${pool.preload.join(", ") || "nothing but caravan's runtime"}), ${f2(pool.cpuShare * 100)}% of one CPU over ${pool.idleMs / 1000} s idle.`;
  process.stdout.write(`${head}\n${report(scenarios, records, b)}\n\n${poolLine}\n`);
  if (JSON_OUT) writeFileSync(JSON_OUT, JSON.stringify({ records, breakdown: b }, null, 1));
}

let cleaning: Promise<void> | undefined;
const finish = () => (cleaning ??= cleanup());
process.once("SIGINT", () => {
  log("interrupted: cleaning up");
  void finish().finally(() => process.exit(130));
});
// Keeps this process alive while it waits on unref'd handles (the control plane in this
// process unrefs the apps it spawns).
const keepAlive = setInterval(() => {}, 60_000);
try {
  await main();
} finally {
  await finish();
  clearInterval(keepAlive);
}
