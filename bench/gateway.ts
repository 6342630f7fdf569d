/**
 * Gateway benchmark, closed loop: `npx tsx bench/gateway.ts` (or `npm run bench:gateway`).
 * Needs `wrk` and `nginx` (apt-get install -y wrk nginx) and a built CLI (`npm run build`).
 *
 *   --rounds N        rounds; every target is measured once per round, in turn (default 5)
 *   --duration S      seconds per measurement (default 5)
 *   --connections N   wrk's keep-alive connections (default 32), on one wrk thread
 *   --baseline DIR    also deploy the app with the caravan checkout in DIR (built: its dist/),
 *                     a second control plane with a home of its own, and measure its public and
 *                     internal endpoints in the same rounds ("public@base", "internal@base"):
 *                     before and after in one run, on a machine whose load comes and goes
 *   --untraced        deploy the app with `tracing: false`: the gateway records no span of its
 *                     requests (by default it records one per request, stored by the
 *                     control plane's telemetry receiver: that cost is in the figures)
 *
 * One command app (a hello-world node:http program) is deployed by the CLI into a fresh
 * CARAVAN_HOME (a control plane of its own, started for the run, its gateway in front of the
 * app's one replica). wrk (1 thread, 32 keep-alive connections, 5 s: each connection sends
 * its next request as soon as it has the answer, so this measures capacity, not a rate any
 * proxy keeps up with) is pointed in turn, in every round, at:
 *   direct     the app's own port (the ceiling: no proxy)
 *   public     the app's public endpoint (requiresAuth: a bearer token checked per request)
 *   internal   the app's internal endpoint (app-to-app calls, no auth)
 *   nginx      nginx in front of the same app (a foreground child with its own temporary
 *              prefix, `worker_processes auto`, upstream keepalive, access_log off)
 * Reported: median requests/s and p99 (wrk's --latency) over the rounds, and the ratios of
 * public and internal to nginx (goal: ≥ 0.9× nginx's requests/s, p99 ≤ 1.2× nginx's); also
 * the CPU time the proxy (the control plane process and its gateway process with its workers, or nginx's master and workers) used per
 * request, read from /proc: on 2 cores everything competes for the same CPUs.
 *
 * Every process started for the run is stopped at the end (the control plane by
 * `caravan server stop` with the run's CARAVAN_HOME) and checked gone.
 * Method, figures and analysis: the "Gateway" section of bench/RESULTS.md.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort } from "../src/backends/local/os.ts";

const ROOT = resolve(import.meta.dirname, "..");
const args = process.argv.slice(2);
function option(name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}
const num = (name: string, dflt: number) => Number(option(name) ?? dflt);
const rounds = num("rounds", 5);
const duration = num("duration", 5);
const connections = num("connections", 32);
const untraced = args.includes("--untraced");

/** The path of a program this benchmark needs, or an error naming the Debian package. */
function need(program: string, paths: string[]): string {
  const found = paths.find((p) => spawnSync(p, ["-v"]).error === undefined);
  if (!found) {
    throw new Error(
      `${program} is not installed: the gateway benchmark needs it (apt-get install -y ${program})`,
    );
  }
  return found;
}
const WRK = need("wrk", ["/usr/bin/wrk", "/usr/local/bin/wrk"]);
const NGINX = need("nginx", ["/usr/sbin/nginx", "/usr/bin/nginx", "/usr/local/sbin/nginx"]);

// The app writes the port caravan gave it to PORT_FILE, for nginx and the direct target.
const SERVER = `import { createServer } from "node:http";
import { writeFileSync } from "node:fs";
const body = Buffer.from("Hello, World!\\n");
const server = createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
  res.end(body);
});
server.listen(Number(process.env.PORT), "127.0.0.1", () =>
  writeFileSync(process.env.PORT_FILE, process.env.PORT));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
`;

const app = (portFile: string) => `import { AppEnvironment } from "caravan-deploy";
export const hello = new AppEnvironment({
  name: "hello",
  command: ["node", "server.mjs"],
  include: ["server.mjs"],
  envVars: { PORT_FILE: ${JSON.stringify(portFile)} },
  requiresAuth: true,
  scaling: { replicas: 1 },${untraced ? "\n  tracing: false," : ""}
});
`;

interface Result {
  rps: number;
  /** Latency quantiles in ms (wrk's --latency). */
  p50: number;
  p99: number;
  /** Socket errors, timeouts and non-2xx/3xx answers: any makes the run invalid. */
  errors: number;
  /** The proxy's CPU time per request, µs (0 for direct). */
  proxyCpuUs: number;
}

/** wrk's duration ("812.00us", "1.20ms", "2.01s") in ms. */
function ms(text: string): number {
  const m = /^([\d.]+)(us|ms|s|m)$/.exec(text);
  if (!m) throw new Error(`unexpected wrk duration ${text}`);
  const scale = { us: 0.001, ms: 1, s: 1000, m: 60_000 }[m[2] as "us" | "ms" | "s" | "m"];
  return Number(m[1]) * scale;
}

function parseWrk(out: string): Omit<Result, "proxyCpuUs"> & { requests: number } {
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const p50 = /^\s+50%\s+(\S+)/m.exec(out);
  const p99 = /^\s+99%\s+(\S+)/m.exec(out);
  const requests = /(\d+) requests in/.exec(out);
  if (!rps || !p50 || !p99 || !requests) throw new Error(`could not read wrk's output:\n${out}`);
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  const errors =
    (socket ? socket.slice(1).reduce((a, b) => a + Number(b), 0) : 0) +
    (non2xx ? Number(non2xx[1]) : 0);
  return {
    rps: Number(rps[1]),
    p50: ms(p50[1]!),
    p99: ms(p99[1]!),
    errors,
    requests: Number(requests[1]),
  };
}

/** CPU time (user + system, ms) a process has used so far; 0 once it is gone. */
function cpuMs(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // clock ticks (USER_HZ = 100)
  } catch {
    return 0;
  }
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === pid) {
        out.push(Number(entry));
      }
    } catch {
      /* gone */
    }
  }
  return out;
}

/**
 * The processes that proxy for a control plane: the daemon itself (whose gateway ran inside
 * it before issue 12) and its gateway process with that one's workers (since).
 */
function proxyPids(daemon: number): number[] {
  const cmdline = (pid: number) => {
    try {
      return readFileSync(`/proc/${pid}/cmdline`, "latin1");
    } catch {
      return "";
    }
  };
  const gateway = childrenOf(daemon).filter((p) => cmdline(p).includes("gateway-process"));
  return [daemon, ...gateway, ...gateway.flatMap(childrenOf)];
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function exited(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((r) => child.once("exit", () => r()));
}

/** Resolves once something answers HTTP on the port (any status). */
async function answers(port: number): Promise<void> {
  for (let i = 0; i < 500; i++) {
    try {
      await (await fetch(`http://127.0.0.1:${port}/`)).arrayBuffer();
      return;
    } catch {
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  throw new Error(`nothing answers on port ${port}`);
}

async function startNginx(
  dir: string,
  upstream: number,
): Promise<{ port: number; child: ChildProcess }> {
  const port = await freePort(new Set());
  const prefix = join(dir, "nginx");
  mkdirSync(join(prefix, "logs"), { recursive: true });
  writeFileSync(
    join(prefix, "nginx.conf"),
    `daemon off;
${process.getuid?.() === 0 ? "user root;" : ""}
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
    server 127.0.0.1:${upstream};
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
  const child = spawn(NGINX, ["-p", prefix, "-c", join(prefix, "nginx.conf")], {
    stdio: "inherit",
  });
  await answers(port);
  return { port, child };
}

/** The app deployed by the caravan checkout at `root`, into a home of its own under `dir`. */
function deploy(root: string, dir: string) {
  const home = join(dir, "home");
  const env = { ...process.env, CARAVAN_HOME: home, NO_COLOR: "1" };
  const bin = join(root, "bin/caravan.js");
  const cli = (...a: string[]) => {
    const r = spawnSync(process.execPath, [bin, ...a], { cwd: dir, env, encoding: "utf8" });
    if (r.status !== 0) throw new Error(`caravan ${a.join(" ")}: ${r.stderr}`);
    return r.stdout;
  };
  mkdirSync(join(dir, "node_modules"), { recursive: true });
  writeFileSync(join(dir, "server.mjs"), SERVER);
  writeFileSync(join(dir, "app.ts"), app(join(dir, "port")));
  // The project imports "caravan-deploy": resolve it to the checkout.
  writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
  spawnSync("ln", ["-s", root, join(dir, "node_modules/caravan-deploy")]);
  const stop = () => spawnSync(process.execPath, [bin, "server", "stop"], { cwd: dir, env });
  try {
    const deployed = JSON.parse(cli("deploy", "app.ts", "--json")) as {
      deployments: { endpoint: string; internalEndpoint: string }[];
    };
    const { endpoint, internalEndpoint } = deployed.deployments[0]!;
    const token = (
      JSON.parse(cli("token", "create", "--name", "bench", "--json")) as { token: string }
    ).token;
    const appPort = Number(readFileSync(join(dir, "port"), "utf8"));
    const daemon = (JSON.parse(readFileSync(join(home, "daemon.json"), "utf8")) as { pid: number })
      .pid;
    return { endpoint, internalEndpoint, token, appPort, daemon, stop };
  } catch (e) {
    stop();
    throw e;
  }
}

async function main(): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "caravan-bench-gw-"));
  const stops: (() => void)[] = [];
  let nginx: ChildProcess | undefined;
  const nginxWorkers = new Set<number>();
  try {
    const ours = deploy(ROOT, join(dir, "ours"));
    stops.push(ours.stop);
    const { endpoint, internalEndpoint, token, appPort, daemon } = ours;
    const baselineRoot = option("baseline");
    const base = baselineRoot ? deploy(resolve(baselineRoot), join(dir, "base")) : undefined;
    if (base) stops.push(base.stop);
    const started = await startNginx(dir, appPort);
    nginx = started.child;
    const nginxPids = () => {
      for (const w of childrenOf(nginx!.pid!)) nginxWorkers.add(w);
      return [nginx!.pid!, ...nginxWorkers];
    };

    const wrkVersion = spawnSync(WRK, ["-v"], { encoding: "utf8" }).stdout.split("\n")[0];
    const nginxVersion = spawnSync(NGINX, ["-v"], { encoding: "utf8" }).stderr.trim();
    console.log(
      `machine: nproc=${availableParallelism()}, ${cpus()[0]?.model}, node ${process.version}, ${nginxVersion}, ${wrkVersion}; load average ${loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}`,
    );
    console.log(
      `wrk: 1 thread, ${connections} keep-alive connections, ${duration} s per target, ${rounds} rounds${untraced ? "; the app deployed with tracing: false" : ""}`,
    );

    const targets = [
      {
        name: "direct",
        url: `http://127.0.0.1:${appPort}/`,
        auth: false,
        pids: () => [] as number[],
      },
      { name: "public", url: `${endpoint}/`, auth: true, pids: () => proxyPids(daemon) },
      {
        name: "internal",
        url: `${internalEndpoint}/`,
        auth: false,
        pids: () => proxyPids(daemon),
      },
      { name: "nginx", url: `http://127.0.0.1:${started.port}/`, auth: false, pids: nginxPids },
      ...(base
        ? [
            {
              name: "public@base",
              url: `${base.endpoint}/`,
              auth: true,
              pids: () => proxyPids(base.daemon),
            },
            {
              name: "internal@base",
              url: `${base.internalEndpoint}/`,
              auth: false,
              pids: () => proxyPids(base.daemon),
            },
          ]
        : []),
    ];
    // Warm-up (the JIT, the gateway's upstream pool, nginx's keepalive pool), unmeasured.
    const tokenOf = (name: string) => (name.endsWith("@base") ? base!.token : token);
    for (const t of targets) await wrk(t.url, t.auth ? tokenOf(t.name) : undefined, 1);
    const results = new Map<string, Result[]>();
    for (let round = 1; round <= rounds; round++) {
      for (const t of targets) {
        const pids = t.pids();
        const before = pids.reduce((a, p) => a + cpuMs(p), 0);
        const r = await wrk(t.url, t.auth ? tokenOf(t.name) : undefined, duration);
        const cpu = pids.reduce((a, p) => a + cpuMs(p), 0) - before;
        const row = { ...r, proxyCpuUs: r.requests > 0 ? (cpu * 1000) / r.requests : 0 };
        results.set(t.name, [...(results.get(t.name) ?? []), row]);
        console.log(
          `round ${round} ${t.name.padEnd(9)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  errors ${r.errors}  proxy CPU ${row.proxyCpuUs.toFixed(1)} µs/req`,
        );
        if (r.errors > 0) throw new Error(`${t.name}: ${r.errors} failed requests`);
      }
    }

    const med = (name: string, key: keyof Result) => median(results.get(name)!.map((r) => r[key]));
    console.log(
      "\n| target | req/s | p50 (ms) | p99 (ms) | proxy CPU µs/req | req/s vs nginx | p99 vs nginx | req/s vs direct |",
    );
    console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (const { name } of targets) {
      console.log(
        `| ${name} | ${med(name, "rps").toFixed(0)} | ${med(name, "p50").toFixed(2)} | ${med(name, "p99").toFixed(2)} | ${name === "direct" ? "-" : med(name, "proxyCpuUs").toFixed(1)} | ${(med(name, "rps") / med("nginx", "rps")).toFixed(2)} | ${(med(name, "p99") / med("nginx", "p99")).toFixed(2)} | ${(med(name, "rps") / med("direct", "rps")).toFixed(2)} |`,
      );
    }
    // Ratios per round too: a neighbour's load shifts whole rounds, the pairs less.
    for (const name of ["public", "internal", ...(base ? ["public@base", "internal@base"] : [])]) {
      const rps = results.get(name)!.map((r, i) => r.rps / results.get("nginx")![i]!.rps);
      const p99 = results.get(name)!.map((r, i) => r.p99 / results.get("nginx")![i]!.p99);
      console.log(
        `${name} vs nginx per round: req/s ${rps.map((x) => x.toFixed(2)).join(" ")}; p99 ${p99.map((x) => x.toFixed(2)).join(" ")}`,
      );
    }
  } finally {
    for (const stop of stops) stop();
    if (nginx) {
      nginx.kill("SIGQUIT");
      await exited(nginx);
    }
    rmSync(dir, { recursive: true, force: true });
  }
  const strays = [...nginxWorkers].filter(alive);
  if (strays.length > 0) throw new Error(`nginx workers left behind: ${strays.join(", ")}`);
  console.log("\nevery process started for the benchmark has exited");
}

function wrk(url: string, token: string | undefined, seconds: number) {
  const a = ["-t1", `-c${connections}`, `-d${seconds}s`, "--latency", url];
  if (token) a.unshift("-H", `Authorization: Bearer ${token}`);
  return new Promise<ReturnType<typeof parseWrk>>((done, fail) => {
    const child = spawn(WRK, a, { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d));
    child.once("error", fail);
    child.once("exit", () => {
      try {
        done(parseWrk(out));
      } catch (e) {
        fail(e);
      }
    });
  });
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

await main();
