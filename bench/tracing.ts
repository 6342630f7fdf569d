/**
 * The cost of caravan's tracing: `npx tsx bench/tracing.ts` (after `npm run build`).
 *
 *   --connections N   concurrent keep-alive connections, one request outstanding on each (20)
 *   --duration S      measured seconds per subject and round (5)
 *   --rounds N        rounds; subjects alternate within each (off, on, off, on, ...) (5)
 *   --sink null       the receiver answers without reading what it gets: the app's own cost
 *                     alone (default: store, the real receiver, whose CPU competes on 2 cores)
 *
 * Three copies of one hello-world node:http app, each a child process: "off" without tracing,
 * "context" with only an AsyncLocalStorage around each request (what any Node tracer needs to
 * carry a span into the handler's async code, to tell that part of the cost apart), "on" with
 * caravan's tracer (`dist/runtime/tracing.js`, as the runtime starts it) exporting every
 * request's server span to a real receiver (the control plane's `TelemetryReceiver`
 * and `TelemetryStore`, in a third child process, on loopback). The load generator (this
 * process) runs a closed loop against each in turn: throughput, p50 and p99 latency and the
 * app's CPU time per request (from /proc) per round, the medians over rounds, and ratios to
 * "off". The receiver's counters at the end say how
 * many spans arrived and were stored.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { Agent, request } from "node:http";
import { cpus, loadavg, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { freePort } from "../src/backends/local/os.ts";

const ROOT = resolve(import.meta.dirname, "..");
const args = process.argv.slice(2);
const num = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const CONNECTIONS = num("connections", 20);
const DURATION_S = num("duration", 5);
const ROUNDS = num("rounds", 5);
const SINK = args.includes("--sink") ? (args[args.indexOf("--sink") + 1] ?? "store") : "store";

const APP = `
const { createServer } = await import("node:http");
if (process.env.TRACING === "context") {
  // Only what any Node tracer needs to carry a span through the handler's async code.
  const { AsyncLocalStorage } = await import("node:async_hooks");
  const als = new AsyncLocalStorage();
  const { Server } = await import("node:http");
  const emit = Server.prototype.emit;
  Server.prototype.emit = function (event, ...args) {
    return event === "request" ? als.run({}, () => emit.call(this, event, ...args)) : emit.call(this, event, ...args);
  };
}
if (process.env.TRACING === "on") {
  const { startTracing } = await import(${JSON.stringify(join(ROOT, "dist/runtime/tracing.js"))});
  if (!startTracing()) throw new Error("tracing did not start");
}
const body = Buffer.from("Hello, World!\\n");
createServer((req, res) => {
  res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
  res.end(body);
}).listen(Number(process.env.PORT), "127.0.0.1", () => process.send("ready"));
`;

const RECEIVER = `
const { createServer } = await import("node:http");
const { TelemetryReceiver } = await import(${JSON.stringify(join(ROOT, "dist/backends/local/telemetry/receiver.js"))});
const { TelemetryStore } = await import(${JSON.stringify(join(ROOT, "dist/backends/local/telemetry/store.js"))});
const receiver = new TelemetryReceiver(new TelemetryStore(process.env.DB));
createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    if (req.url === "/stats") return res.end(JSON.stringify(receiver.stats()));
    if (process.env.SINK === "null") return res.end("{}");
    res.end(JSON.stringify(receiver.accept("traces", JSON.parse(Buffer.concat(chunks).toString()))));
  });
}).listen(Number(process.env.PORT), "127.0.0.1", () => process.send("ready"));
`;

function child(source: string, env: Record<string, string>): Promise<ChildProcess> {
  const proc = spawn(process.execPath, ["--input-type=module", "-e", source], {
    env: { ...process.env, ...env },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  return new Promise((ok, fail) => {
    proc.once("message", () => ok(proc));
    proc.once("exit", (code) => fail(new Error(`a child exited (${code}) before it was ready`)));
  });
}

/** CPU seconds (user + system) a process has used, from /proc. */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** N connections, each sending its next request when the last answer ended. */
async function closedLoop(port: number, seconds: number, pid?: number, receiverPid?: number) {
  const cpu0 = pid ? cpuSeconds(pid) : 0;
  const rcpu0 = receiverPid ? cpuSeconds(receiverPid) : 0;
  const agent = new Agent({ keepAlive: true, maxSockets: CONNECTIONS });
  const latencies: number[] = [];
  const end = performance.now() + seconds * 1000;
  const one = () =>
    new Promise<void>((ok, fail) => {
      const t = performance.now();
      const req = request({ host: "127.0.0.1", port, path: "/", agent }, (res) => {
        res.resume();
        res.once("end", () => {
          latencies.push(performance.now() - t);
          ok();
        });
      });
      req.once("error", fail);
      req.end();
    });
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONNECTIONS }, async () => {
      while (performance.now() < end) await one();
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  agent.destroy();
  latencies.sort((a, b) => a - b);
  return {
    rps: latencies.length / elapsed,
    // The app's CPU per request (µs): what tracing costs the app itself, whatever the scheduling.
    appCpuUs: pid ? ((cpuSeconds(pid) - cpu0) / latencies.length) * 1e6 : 0,
    receiverCpuUs: receiverPid ? ((cpuSeconds(receiverPid) - rcpu0) / latencies.length) * 1e6 : 0,
    p50: latencies[Math.floor(latencies.length * 0.5)]!,
    p99: latencies[Math.floor(latencies.length * 0.99)]!,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main() {
  const dir = mkdtempSync(join(tmpdir(), "caravan-bench-tracing-"));
  const children: ChildProcess[] = [];
  try {
    const receiverPort = await freePort(new Set());
    children.push(
      await child(RECEIVER, { PORT: String(receiverPort), DB: join(dir, "t.db"), SINK }),
    );
    // off: no tracing; context: only an AsyncLocalStorage around each request (the part of
    // any Node tracer that carries the span into the handler's async code); on: caravan's.
    const SUBJECTS = ["off", "context", "on"] as const;
    type Subject = (typeof SUBJECTS)[number];
    const used = new Set([receiverPort]);
    const apps = {} as Record<Subject, { port: number; pid: number }>;
    for (const subject of SUBJECTS) {
      const port = await freePort(used);
      used.add(port);
      const proc = await child(APP, {
        PORT: String(port),
        TRACING: subject,
        OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiverPort}`,
        OTEL_SERVICE_NAME: "hello",
      });
      children.push(proc);
      apps[subject] = { port, pid: proc.pid! };
    }
    console.log(
      `${cpus().length} × ${cpus()[0]?.model}, load ${loadavg()
        .map((l) => l.toFixed(2))
        .join(" ")}; ` +
        `${CONNECTIONS} connections, ${DURATION_S} s × ${ROUNDS} rounds per subject, sink ${SINK}`,
    );
    // Warm-up, unmeasured.
    for (const subject of SUBJECTS) await closedLoop(apps[subject].port, 1);
    const results = Object.fromEntries(SUBJECTS.map((s) => [s, []])) as unknown as Record<
      Subject,
      Awaited<ReturnType<typeof closedLoop>>[]
    >;
    for (let round = 0; round < ROUNDS; round++) {
      // Rotate which goes first, so a drift in the machine's load falls on all.
      const order = SUBJECTS.map((_, i) => SUBJECTS[(i + round) % SUBJECTS.length]!);
      for (const subject of order) {
        const { port, pid } = apps[subject];
        const r = await closedLoop(port, DURATION_S, pid, children[0]!.pid);
        results[subject].push(r);
        console.log(
          `round ${round + 1} ${subject.padEnd(7)} ${r.rps.toFixed(0).padStart(6)} req/s  p50 ${r.p50.toFixed(2)} ms  p99 ${r.p99.toFixed(2)} ms  app CPU ${r.appCpuUs.toFixed(1)} µs/req  receiver CPU ${r.receiverCpuUs.toFixed(1)} µs/req`,
        );
      }
    }
    const summary = (s: Subject) => ({
      cpu: median(results[s].map((r) => r.appCpuUs)),
      rcpu: median(results[s].map((r) => r.receiverCpuUs)),
      rps: median(results[s].map((r) => r.rps)),
      p50: median(results[s].map((r) => r.p50)),
      p99: median(results[s].map((r) => r.p99)),
    });
    const off = summary("off");
    console.log("");
    for (const subject of SUBJECTS) {
      const m = summary(subject);
      console.log(
        `median ${subject.padEnd(7)} ${m.rps.toFixed(0)} req/s (×${(m.rps / off.rps).toFixed(3)}), p50 ${m.p50.toFixed(2)} ms (×${(m.p50 / off.p50).toFixed(3)}), p99 ${m.p99.toFixed(2)} ms (×${(m.p99 / off.p99).toFixed(3)}), app CPU ${m.cpu.toFixed(1)} µs/req (×${(m.cpu / off.cpu).toFixed(3)}), receiver CPU ${m.rcpu.toFixed(1)} µs/req`,
      );
    }
    // Let the last batch go out, then ask the receiver what it got.
    await new Promise((r) => setTimeout(r, 1500));
    const stats = await new Promise<string>((ok) =>
      request({ host: "127.0.0.1", port: receiverPort, path: "/stats" }, (res) => {
        let s = "";
        res.on("data", (c) => (s += c));
        res.on("end", () => ok(s));
      }).end(),
    );
    console.log(`receiver: ${stats}`);
  } finally {
    for (const c of children) c.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
