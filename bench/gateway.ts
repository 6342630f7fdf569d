/**
 * Gateway benchmark: `npx tsx bench/gateway.ts` (or `npm run bench:gateway`).
 *
 *   --connections N   concurrent keep-alive connections of the load generator (default 50)
 *   --duration S      measured seconds per target and round (default 8)
 *   --warmup S        unmeasured seconds before each measurement (default 2)
 *   --rounds N        rounds; the targets are interleaved in each (default 3); medians reported
 *   --cold-runs N     cold starts measured, each way (default 15)
 *   --only X          only targets whose name contains X (throughput part)
 *   --rate R          then latency at a fixed R req/s, open loop (default 5000; 0 skips it)
 *   --quiet-wait S    before each measurement, wait (at most S s, default 60) for an idle machine
 *   --max-foreign F   repeat a measurement (up to --retries N, default 3) when other processes
 *                     used more than F of a CPU during it (default 0.1)
 *   --compare FILE    also measure the gateway module FILE (e.g. an earlier gateway.ts), as
 *                     target "gateway-compare", interleaved with the others
 *
 * Throughput. A hello-world node:http app (one child process) is hit by the same load
 * generator (a child process: N keep-alive connections, one request outstanding on each,
 * raw sockets, every latency recorded) in four ways:
 *   direct            the app's port
 *   gateway           the Gateway's internal listener (no auth), the Gateway running in its own
 *                     child process as in the daemon
 *   gateway+auth      the Gateway's public listener with a bearer token (TokenStore.verify per
 *                     request, over an in-memory SQLite database)
 *   nginx             nginx (non-daemon child, temp prefix, `worker_processes auto`, upstream
 *                     keepalive, access_log off)
 * Besides req/s and latency, the CPU time each process used (from /proc) is divided by the
 * requests it served: on 2 cores every process competes for the same CPUs, so CPU per request
 * is the cost a proxy adds, whatever the scheduling.
 *
 * Cold start. The app's own start-up (spawn to first successful response, probing its port
 * every millisecond) against a request sent to a Gateway with zero replicas, whose wake hook
 * spawns the app, probes its port the same way and calls addReplica: time to the response.
 *
 * Every child process is stopped at the end (and checked gone, nginx's workers included).
 * Method, figures and analysis: the "Gateway" section of bench/RESULTS.md.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { get } from "node:http";
import { connect } from "node:net";
import { availableParallelism, cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { performance } from "node:perf_hooks";
import Database from "better-sqlite3";
import type { Gateway as GatewayClass } from "../src/backends/gateway.ts";
import { freePort } from "../src/backends/local/os.ts";
import { TokenStore } from "../src/backends/local/tokens.ts";

const SELF = import.meta.filename;
const args = process.argv.slice(2);
function option(name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}
const num = (name: string, dflt: number) => Number(option(name) ?? dflt);

const HELLO = `import { createServer } from "node:http";
const body = Buffer.from("Hello, World!\\n");
createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
  res.end(body);
}).listen(Number(process.argv[2]), "127.0.0.1");
`;

// ---------------------------------------------------------------------------------------------
// Shared helpers

/** GET until the port answers (any status), retrying every millisecond. */
async function probe(port: number): Promise<void> {
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = get({ host: "127.0.0.1", port, path: "/", agent: false }, (res) => {
        res.resume();
        res.on("end", () => resolve(true));
      });
      req.on("error", () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 1));
  }
}

function spawnHello(dir: string, port: number): ChildProcess {
  return spawn(process.execPath, [join(dir, "hello.mjs"), String(port)], { stdio: "ignore" });
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once("exit", () => r()));
}

// ---------------------------------------------------------------------------------------------
// Child role: the gateway (as the daemon would run it)

async function gatewayRole(): Promise<void> {
  const dir = option("dir")!;
  const upstream = Number(option("upstream") ?? 0);
  const store = new TokenStore(new Database(":memory:"));
  const { token } = store.create("bench");
  let cold: ChildProcess | undefined;
  const wakes: { spawnToReadyMs: number }[] = [];
  const module = option("module") ?? join(import.meta.dirname, "../src/backends/gateway.ts");
  const { Gateway } = (await import(module)) as { Gateway: typeof GatewayClass };
  const gw = new Gateway({
    authorize: (t) => store.verify(t),
    wake: async (app) => {
      const port = await freePort(new Set());
      const t0 = performance.now();
      cold = spawnHello(dir, port);
      await probe(port);
      wakes.push({ spawnToReadyMs: performance.now() - t0 });
      gw.addReplica(app, { id: "cold", port });
    },
  });
  const ports = { public: Number(option("public")), internal: Number(option("internal")) };
  await gw.open("hello", ports, { requiresAuth: true, requestTimeoutMs: 30_000 });
  if (upstream) gw.addReplica("hello", { id: "warm", port: upstream });
  process.on("message", (m: { type: string }) => {
    void (async () => {
      if (m.type === "reset") {
        await gw.drain("hello", "cold", 0);
        if (cold) {
          cold.kill("SIGKILL");
          await exited(cold);
          cold = undefined;
        }
        process.send!({ type: "reset-done", wake: wakes.at(-1) });
      } else if (m.type === "stats") {
        process.send!({ type: "stats", stats: gw.stats("hello") });
      }
    })();
  });
  process.on("disconnect", () => {
    cold?.kill("SIGKILL");
    void gw.closeAll().then(() => process.exit(0));
  });
  process.send!({ type: "ready", token });
}

// ---------------------------------------------------------------------------------------------
// Child role: the load generator

interface LoadResult {
  requests: number;
  total: number;
  errors: number;
  non2xx: number;
  rps: number;
  p50: number;
  p90: number;
  p99: number;
  p999: number;
  max: number;
  /** The load generator's own CPU time. */
  cpuMs: number;
}

async function loadRole(): Promise<void> {
  const port = Number(option("port"));
  const connections = num("connections", 50);
  const durationMs = num("duration", 8) * 1000;
  const warmupMs = num("warmup", 2) * 1000;
  const auth = option("auth");
  // --rate R: open loop, R requests/s in all, each connection on its own schedule; a request
  // held up by the previous one's response is timed from when it was due (no coordinated
  // omission). Without it: closed loop, each connection sends as soon as it has its answer.
  const rate = Number(option("rate") ?? 0);
  const interval = rate > 0 ? (connections * 1000) / rate : 0;
  const request = Buffer.from(
    `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUser-Agent: caravan-bench\r\nAccept: */*\r\n` +
      (auth ? `Authorization: Bearer ${auth}\r\n` : "") +
      "\r\n",
  );
  let latencies = new Float64Array(1 << 21);
  let n = 0;
  let total = 0;
  let errors = 0;
  let non2xx = 0;
  const t0 = performance.now();
  const from = t0 + warmupMs;
  const end = from + durationMs;
  const CRLF2 = Buffer.from("\r\n\r\n");
  const LAST_CHUNK = Buffer.from("0\r\n\r\n");

  let opened = 0;
  const runConnection = (): Promise<void> =>
    new Promise((resolve) => {
      const socket = connect({ host: "127.0.0.1", port, noDelay: true });
      let buf: Buffer | undefined;
      let sentAt = 0;
      let done = false;
      // Open loop: the connections' schedules are spread evenly over one interval.
      let due = t0 + (interval * opened++) / connections;
      const write = () => {
        if (done) return;
        if (performance.now() >= end) {
          done = true;
          socket.destroy();
          resolve();
          return;
        }
        socket.write(request);
      };
      const send = () => {
        const now = performance.now();
        if (interval === 0) {
          sentAt = now;
          return write();
        }
        if (due > now) {
          sentAt = due;
          setTimeout(() => {
            sentAt = performance.now();
            write();
          }, due - now);
        } else {
          sentAt = due;
          write();
        }
        due += interval;
      };
      socket.on("connect", send);
      // A server may close a keep-alive connection (nginx after keepalive_requests): reconnect.
      const reconnect = () => {
        if (done) return;
        done = true;
        socket.destroy();
        if (performance.now() < end) void runConnection().then(resolve);
        else resolve();
      };
      socket.on("error", () => {
        errors++;
        reconnect();
      });
      socket.on("close", reconnect);
      socket.on("data", (chunk: Buffer) => {
        buf = buf ? Buffer.concat([buf, chunk]) : chunk;
        const headEnd = buf.indexOf(CRLF2);
        if (headEnd < 0) return;
        const head = buf.toString("latin1", 0, headEnd);
        const length = /\r\ncontent-length:\s*(\d+)/i.exec(head);
        let size: number;
        if (length) {
          size = headEnd + 4 + Number(length[1]);
          if (buf.length < size) return;
        } else {
          const last = buf.indexOf(LAST_CHUNK, headEnd + 4);
          if (last < 0) return;
          size = last + LAST_CHUNK.length;
        }
        const now = performance.now();
        total++;
        if (head.charCodeAt(9) !== 50 /* "2" */) non2xx++;
        if (now >= from && now <= end) {
          if (n === latencies.length) {
            const bigger = new Float64Array(n * 2);
            bigger.set(latencies);
            latencies = bigger;
          }
          latencies[n++] = now - sentAt;
        }
        buf = buf.length > size ? buf.subarray(size) : undefined;
        send();
      });
    });

  await Promise.all(Array.from({ length: connections }, runConnection));
  const sorted = latencies.subarray(0, n).sort();
  const q = (p: number) => sorted[Math.min(n - 1, Math.ceil(p * n) - 1)] ?? 0;
  const result: LoadResult = {
    requests: n,
    total,
    errors,
    non2xx,
    rps: n / (durationMs / 1000),
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
    p999: q(0.999),
    max: sorted[n - 1] ?? 0,
    cpuMs: (process.cpuUsage().user + process.cpuUsage().system) / 1000,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
}

// ---------------------------------------------------------------------------------------------
// Orchestrator

const children: ChildProcess[] = [];
/** nginx's workers: not our children, checked gone at the end all the same. */
const grandchildren = new Set<number>();
function track(child: ChildProcess): ChildProcess {
  children.push(child);
  return child;
}
/** SIGTERM first (nginx's master takes its workers down with it), SIGKILL after 3 s. */
async function stopAll(): Promise<void> {
  const running = children.filter((c) => c.exitCode === null && c.signalCode === null);
  for (const c of running) c.kill("SIGTERM");
  const timer = setTimeout(() => running.forEach((c) => c.kill("SIGKILL")), 3000);
  await Promise.all(running.map(exited));
  clearTimeout(timer);
}

/** CPU time (user + system, ms) a process has used so far. */
function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // clock ticks (USER_HZ = 100)
  } catch {
    return 0;
  }
}

function existsPid(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid) out.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return out;
}

function tsxChild(role: string, extra: string[], ipc: boolean): ChildProcess {
  return track(
    spawn(process.execPath, ["--import", "tsx", SELF, "--role", role, ...extra], {
      stdio: ipc ? ["ignore", "pipe", "inherit", "ipc"] : ["ignore", "pipe", "inherit"],
    }),
  );
}

function nextMessage<T>(child: ChildProcess, type: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: { type: string }) => {
      if (m.type !== type) return;
      child.off("message", onMessage);
      child.off("exit", onExit);
      resolve(m as T);
    };
    const onExit = () => reject(new Error(`child exited before sending ${type}`));
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

/** CPU time (ms) every CPU of the machine spent busy so far (from /proc/stat). */
function machineBusyMs(): number {
  const f = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1);
  const ticks = f.map(Number);
  const total = ticks.slice(0, 8).reduce((a, b) => a + b, 0);
  return ((total - ticks[3]! - ticks[4]!) * 1000) / 100; // minus idle and iowait
}

/** Waits (up to --quiet-wait s, default 60) until the machine is mostly idle. */
async function waitQuiet(): Promise<void> {
  const deadline = Date.now() + num("quiet-wait", 60) * 1000;
  while (Date.now() < deadline) {
    const b0 = machineBusyMs();
    await new Promise((r) => setTimeout(r, 500));
    if ((machineBusyMs() - b0) / 500 < 0.15) return;
  }
}

/**
 * One load-generator run, repeated (up to --retries times, default 3) while other work on
 * the machine used more than --max-foreign of a CPU (default 0.1) during it: on a shared
 * 2-core machine, someone else's build halves a run's throughput.
 */
async function runLoad(
  port: number,
  auth: string | undefined,
  pids: () => number[],
  rate = 0,
): Promise<LoadResult & { cpuUsPerReq: number[]; foreign: number }> {
  let last: (LoadResult & { cpuUsPerReq: number[]; foreign: number }) | undefined;
  for (let attempt = 0; attempt <= num("retries", 3); attempt++) {
    await waitQuiet();
    last = await runLoadOnce(port, auth, pids, rate);
    if (last.foreign <= num("max-foreign", 0.1)) return last;
    console.log(`  (other work used ${last.foreign.toFixed(2)} CPU during the run: repeating)`);
  }
  return last!;
}

async function runLoadOnce(
  port: number,
  auth: string | undefined,
  pids: () => number[],
  rate: number,
): Promise<LoadResult & { cpuUsPerReq: number[]; foreign: number }> {
  const extra = [
    "--port",
    String(port),
    "--connections",
    String(num("connections", 50)),
    "--duration",
    String(num("duration", 8)),
    "--warmup",
    String(num("warmup", 2)),
  ];
  if (auth) extra.push("--auth", auth);
  if (rate > 0) extra.push("--rate", String(rate));
  const watched = pids();
  const before = watched.map(cpuMs);
  const busy0 = machineBusyMs();
  const own0 = process.cpuUsage();
  const t0 = performance.now();
  const child = tsxChild("load", extra, false);
  let out = "";
  child.stdout!.on("data", (d: Buffer) => (out += d));
  await exited(child);
  const elapsed = performance.now() - t0;
  const after = watched.map(cpuMs);
  const own = process.cpuUsage(own0);
  const result = JSON.parse(out) as LoadResult;
  const deltas = watched.map((_, i) => after[i]! - before[i]!);
  const ours = deltas.reduce((a, b) => a + b, 0) + result.cpuMs + (own.user + own.system) / 1000;
  // The load generator's start-up (tsx) counts as ours; what is left is someone else's.
  const foreign = Math.max(0, machineBusyMs() - busy0 - ours) / elapsed;
  const cpuUsPerReq = deltas.map((d) => (d * 1000) / result.total);
  return { ...result, cpuUsPerReq, foreign };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function startNginx(
  dir: string,
  upstreamPort: number,
): Promise<{ port: number; child: ChildProcess }> {
  const nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"].find((p) => {
    try {
      readFileSync(p);
      return true;
    } catch {
      return false;
    }
  });
  if (!nginx) throw new Error("nginx not found: apt-get install -y nginx");
  const port = await freePort(new Set());
  const prefix = join(dir, "nginx");
  mkdirSync(join(prefix, "logs"), { recursive: true });
  const root = process.getuid?.() === 0;
  writeFileSync(
    join(prefix, "nginx.conf"),
    `daemon off;
${root ? "user root;" : ""}
worker_processes auto;
pid ${prefix}/nginx.pid;
error_log ${prefix}/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path ${prefix}/client_body;
  proxy_temp_path ${prefix}/proxy;
  fastcgi_temp_path ${prefix}/fastcgi;
  uwsgi_temp_path ${prefix}/uwsgi;
  scgi_temp_path ${prefix}/scgi;
  upstream hello {
    server 127.0.0.1:${upstreamPort};
    keepalive 128;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://hello;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Forwarded-Host $host;
    }
  }
}
`,
  );
  const child = track(
    spawn(nginx, ["-p", prefix, "-c", join(prefix, "nginx.conf")], { stdio: "inherit" }),
  );
  await probe(port);
  return { port, child };
}

async function coldStarts(dir: string, runs: number) {
  const ports = { public: await freePort(new Set()), internal: await freePort(new Set()) };
  const gw = tsxChild(
    "gateway",
    ["--dir", dir, "--public", String(ports.public), "--internal", String(ports.internal)],
    true,
  );
  await nextMessage(gw, "ready");
  const direct: number[] = [];
  const through: number[] = [];
  const wakeSpawnToReady: number[] = [];
  for (let i = 0; i < runs + 1; i++) {
    // Direct: spawn the app here and probe it.
    const port = await freePort(new Set());
    const t0 = performance.now();
    const app = track(spawnHello(dir, port));
    await probe(port);
    const d = performance.now() - t0;
    app.kill("SIGKILL");
    await exited(app);
    // Through the gateway: one request to an app with zero replicas.
    const t1 = performance.now();
    await probe(ports.internal);
    const g = performance.now() - t1;
    gw.send({ type: "reset" });
    const reset = await nextMessage<{ wake?: { spawnToReadyMs: number } }>(gw, "reset-done");
    if (i === 0) continue; // the first of each warms the page cache and the JIT
    direct.push(d);
    through.push(g);
    if (reset.wake) wakeSpawnToReady.push(reset.wake.spawnToReadyMs);
  }
  gw.disconnect();
  await exited(gw);
  return { direct, through, wakeSpawnToReady };
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "caravan-bench-gw-"));
  const cleanup = async () => {
    await stopAll();
    rmSync(dir, { recursive: true, force: true });
  };
  process.on("SIGINT", () => void cleanup().then(() => process.exit(130)));
  try {
    writeFileSync(join(dir, "hello.mjs"), HELLO);
    const nginxVersion = spawnSync("/usr/sbin/nginx", ["-v"], { encoding: "utf8" }).stderr.trim();
    console.log(
      `machine: nproc=${availableParallelism()}, ${cpus()[0]?.model}, node ${process.version}, ${nginxVersion || "nginx ?"}, load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}`,
    );
    console.log(
      `load: ${num("connections", 50)} connections, ${num("warmup", 2)} s warm-up + ${num("duration", 8)} s per target, ${num("rounds", 3)} rounds`,
    );

    // The app, the gateway (with the app as its one replica) and nginx in front of the app.
    const appPort = await freePort(new Set());
    const app = track(spawnHello(dir, appPort));
    await probe(appPort);
    const startGateway = async (module?: string) => {
      const ports = { public: await freePort(new Set()), internal: await freePort(new Set()) };
      const child = tsxChild(
        "gateway",
        [
          ...["--dir", dir, "--upstream", String(appPort)],
          ...["--public", String(ports.public), "--internal", String(ports.internal)],
          ...(module ? ["--module", module] : []),
        ],
        true,
      );
      const { token } = await nextMessage<{ token: string }>(child, "ready");
      return { child, ports, token };
    };
    const { child: gw, ports, token } = await startGateway();
    const compare = option("compare") ? await startGateway(option("compare")) : undefined;
    const nginx = await startNginx(dir, appPort);
    const nginxPids = () => {
      const workers = childrenOf(nginx.child.pid!);
      workers.forEach((w) => grandchildren.add(w));
      return [nginx.child.pid!, ...workers];
    };

    const targets = [
      { name: "direct", port: appPort, auth: undefined, proxy: () => [] as number[] },
      { name: "gateway", port: ports.internal, auth: undefined, proxy: () => [gw.pid!] },
      { name: "gateway+auth", port: ports.public, auth: token, proxy: () => [gw.pid!] },
      { name: "nginx", port: nginx.port, auth: undefined, proxy: nginxPids },
      ...(compare
        ? [
            {
              name: "gateway-compare",
              port: compare.ports.internal,
              auth: undefined,
              proxy: () => [compare.child.pid!],
            },
          ]
        : []),
    ].filter((t) => !option("only") || t.name.includes(option("only")!));
    const results = new Map<string, (LoadResult & { proxyCpu: number; appCpu: number })[]>();
    const rounds = num("rounds", 3);
    for (let round = 1; round <= rounds; round++) {
      for (const t of targets) {
        const r = await runLoad(t.port, t.auth, () => [app.pid!, ...t.proxy()]);
        const proxyCpu = r.cpuUsPerReq.slice(1).reduce((a, b) => a + b, 0);
        const row = { ...r, appCpu: r.cpuUsPerReq[0]!, proxyCpu };
        results.set(t.name, [...(results.get(t.name) ?? []), row]);
        console.log(
          `round ${round} ${t.name.padEnd(12)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  errors ${r.errors} non-2xx ${r.non2xx}  CPU/req: app ${row.appCpu.toFixed(1)} µs, proxy ${proxyCpu.toFixed(1)} µs  (other work: ${r.foreign.toFixed(2)} CPU)`,
        );
      }
    }
    gw.send({ type: "stats" });
    const gwStats = await nextMessage<{ stats: unknown }>(gw, "stats");
    console.log(`gateway's own stats: ${JSON.stringify(gwStats.stats)}`);

    const med = (name: string, key: "rps" | "p50" | "p99" | "proxyCpu" | "appCpu") =>
      median((results.get(name) ?? []).map((r) => r[key]));
    console.log(
      "\n| target | req/s | p50 (ms) | p99 (ms) | proxy CPU µs/req | app CPU µs/req | req/s vs nginx | p99 vs nginx | req/s vs direct |",
    );
    console.log("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    const has = (n: string) => results.has(n);
    for (const t of targets) {
      const n = t.name;
      const vsNginx = has("nginx") ? (med(n, "rps") / med("nginx", "rps")).toFixed(2) : "-";
      const p99Nginx = has("nginx") ? (med(n, "p99") / med("nginx", "p99")).toFixed(2) : "-";
      const vsDirect = has("direct") ? (med(n, "rps") / med("direct", "rps")).toFixed(2) : "-";
      console.log(
        `| ${n} | ${med(n, "rps").toFixed(0)} | ${med(n, "p50").toFixed(2)} | ${med(n, "p99").toFixed(2)} | ${n === "direct" ? "-" : med(n, "proxyCpu").toFixed(1)} | ${med(n, "appCpu").toFixed(1)} | ${vsNginx} | ${p99Nginx} | ${vsDirect} |`,
      );
    }

    // Latency at a fixed rate well below every target's capacity: what a request costs when
    // nothing queues, rather than how long the queues get at saturation.
    const rate = num("rate", 5000);
    if (rate > 0) {
      const fixed = new Map<string, LoadResult[]>();
      for (let round = 1; round <= rounds; round++) {
        for (const t of targets) {
          const r = await runLoad(t.port, t.auth, () => [app.pid!, ...t.proxy()], rate);
          fixed.set(t.name, [...(fixed.get(t.name) ?? []), r]);
          console.log(
            `rate ${rate}/s round ${round} ${t.name.padEnd(12)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  p99.9 ${r.p999.toFixed(2)} ms  max ${r.max.toFixed(2)} ms  errors ${r.errors} non-2xx ${r.non2xx}  (other work: ${r.foreign.toFixed(2)} CPU)`,
          );
        }
      }
      const fmed = (name: string, key: "rps" | "p50" | "p99" | "p999" | "max") =>
        median((fixed.get(name) ?? []).map((r) => r[key]));
      console.log(
        `\nfixed rate ${rate} req/s\n| target | req/s | p50 (ms) | p99 (ms) | p99.9 (ms) | max (ms) | p50 vs nginx | p99 vs nginx |`,
      );
      console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
      for (const t of targets) {
        const n = t.name;
        const ratio = (key: "p50" | "p99") =>
          fixed.has("nginx") ? (fmed(n, key) / fmed("nginx", key)).toFixed(2) : "-";
        console.log(
          `| ${n} | ${fmed(n, "rps").toFixed(0)} | ${fmed(n, "p50").toFixed(2)} | ${fmed(n, "p99").toFixed(2)} | ${fmed(n, "p999").toFixed(2)} | ${fmed(n, "max").toFixed(2)} | ${ratio("p50")} | ${ratio("p99")} |`,
        );
      }
    }

    gw.disconnect();
    compare?.child.disconnect();
    nginx.child.kill("SIGQUIT");
    app.kill("SIGTERM");
    await Promise.all([exited(gw), exited(nginx.child), exited(app)]);
    if (compare) await exited(compare.child);

    const runs = num("cold-runs", 15);
    const cold = await coldStarts(dir, runs);
    const line = (label: string, xs: number[]) =>
      console.log(
        `| ${label} | ${median(xs).toFixed(1)} | ${Math.min(...xs).toFixed(1)} | ${Math.max(...xs).toFixed(1)} |`,
      );
    console.log(
      `\ncold start, ${runs} runs each (ms)\n| | median | min | max |\n|---|---:|---:|---:|`,
    );
    line("app's own start-up (spawn → first response, direct)", cold.direct);
    line("first response through the gateway (0 replicas, wake)", cold.through);
    line("  of which: the wake hook's spawn → port answers", cold.wakeSpawnToReady);
    const diff = cold.through.map((t, i) => t - cold.direct[i]!);
    line("difference (gateway − direct, paired)", diff);
  } finally {
    await cleanup();
  }
  const left = children.filter((c) => c.exitCode === null && c.signalCode === null);
  if (left.length > 0) throw new Error(`children still running: ${left.map((c) => c.pid)}`);
  const strays = [...grandchildren].filter(existsPid);
  if (strays.length > 0) throw new Error(`nginx workers left behind: ${strays.join(", ")}`);
  console.log("\nevery process started for the benchmark has exited");
}

const role = option("role");
if (role === "gateway") await gatewayRole();
else if (role === "load") await loadRole();
else await main();
