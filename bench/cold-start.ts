/**
 * Cold start through the whole control plane: `npx tsx bench/cold-start.ts [--runs N]`.
 *
 * One command app (a plain node:http program) deployed with `scaling: { replicas: [0, 1],
 * scaledownAfter: 1 }` into a fresh CARAVAN_HOME. Each round waits until the app has scaled
 * to zero (status shows 0 replicas), then times one request to its public endpoint: the
 * gateway queues it, the control plane's wake starts a replica (port, spawn, readiness probe),
 * and the request is forwarded.
 *
 * Baseline, measured in the same run, alternating with the cold starts: the app's own
 * start-up, the same program spawned by this process with the same minimal environment,
 * timed from spawn until its first response (it prints "listening" when it listens; the
 * request is sent at that moment).
 * Difference = caravan's cold-start overhead (target: within 30 ms).
 *
 * `--fastify`: the app is a FastifyAppEnvironment served by caravan's runtime, which the
 * control plane starts in a process of its warm pool (each round waits until the pool is
 * full again); the baseline is the same Fastify app as a plain program (target: within 10 ms
 * of it). `--no-warm` deploys it with `--no-warm` instead: every wake spawns a cold process.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "bin/caravan.js");
const runs = Number(process.argv[process.argv.indexOf("--runs") + 1]) || 10;
const FASTIFY = process.argv.includes("--fastify");
const NO_WARM = process.argv.includes("--no-warm");

const SERVER = `import { createServer } from "node:http";
const server = createServer((req, res) => res.end("hello"));
server.listen(Number(process.env.PORT), "127.0.0.1", () => console.log("listening"));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
`;

const FASTIFY_SERVER = `import Fastify from "fastify";
const app = Fastify();
app.get("/", async () => "hello");
await app.listen({ port: Number(process.env.PORT), host: "127.0.0.1" });
console.log("listening");
process.on("SIGTERM", () => app.close().then(() => process.exit(0)));
`;

const FASTIFY_APP = `import Fastify from "fastify";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";
const app = Fastify();
app.get("/", async () => "hello");
export const hello = new FastifyAppEnvironment({
  name: "hello",
  app,
  requiresAuth: false,
  scaling: { replicas: [0, 1], scaledownAfter: 1 },
});
`;

const APP = `import { AppEnvironment } from "caravan-deploy";
export const hello = new AppEnvironment({
  name: "hello",
  command: ["node", "server.mjs"],
  include: ["server.mjs"],
  requiresAuth: false,
  scaling: { replicas: [0, 1], scaledownAfter: 1 },
});
`;

const dir = mkdtempSync(join(tmpdir(), "caravan-cold-"));
const env = { ...process.env, CARAVAN_HOME: join(dir, "home"), NO_COLOR: "1" };
writeFileSync(join(dir, "server.mjs"), FASTIFY ? FASTIFY_SERVER : SERVER);
writeFileSync(join(dir, "app.ts"), FASTIFY ? FASTIFY_APP : APP);
// The project imports "caravan": resolve it to this checkout.
writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module" }));
spawnSync("mkdir", ["-p", join(dir, "node_modules")]);
spawnSync("ln", ["-s", ROOT, join(dir, "node_modules/caravan")]);
spawnSync("ln", ["-s", join(ROOT, "node_modules/fastify"), join(dir, "node_modules/fastify")]);

const cli = (...args: string[]) => {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: dir, env, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`caravan ${args.join(" ")}: ${r.stderr}`);
  return r.stdout;
};
const replicas = () =>
  (JSON.parse(cli("status", "--json")) as { environments: { replicas?: number }[] })
    .environments[0]!.replicas;

/** Waits until the control plane's warm pool is full again (its health answer). */
async function poolFull(): Promise<void> {
  const home = env.CARAVAN_HOME;
  const { url } = JSON.parse(readFileSync(join(home, "daemon.json"), "utf8")) as { url: string };
  const token = readFileSync(join(home, "token"), "utf8").trim();
  for (;;) {
    const res = await fetch(`${url}/v1/health`, { headers: { authorization: `Bearer ${token}` } });
    const pool = ((await res.json()) as { warmPool: { size: number; idle: number } }).warmPool;
    if (pool.idle >= pool.size) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function direct(): Promise<number> {
  const port = 20000 + Math.floor(Math.random() * 20000);
  const t0 = performance.now();
  const child = spawn(process.execPath, ["server.mjs"], {
    cwd: dir,
    // The environment caravan gives its apps (only the basics): inherited extras like
    // NODE_EXTRA_CA_CERTS alone cost node ~40 ms at start-up here.
    env: { PATH: process.env.PATH, HOME: process.env.HOME, PORT: String(port) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((ok) => child.stdout.once("data", () => ok()));
  await (await fetch(`http://127.0.0.1:${port}/`)).text();
  const ms = performance.now() - t0;
  child.kill("SIGTERM");
  await new Promise((ok) => child.once("exit", ok));
  return ms;
}

async function main() {
  const deployed = JSON.parse(
    cli("deploy", "app.ts", "--json", ...(NO_WARM ? ["--no-warm"] : [])),
  ) as {
    deployments: { endpoint: string }[];
  };
  const endpoint = deployed.deployments[0]!.endpoint;
  const cold: number[] = [];
  const own: number[] = [];
  for (let i = 0; i < runs + 1; i++) {
    while (replicas() !== 0) await new Promise((r) => setTimeout(r, 200));
    if (FASTIFY && !NO_WARM) await poolFull();
    const t0 = performance.now();
    const res = await fetch(`${endpoint}/`);
    if ((await res.text()) !== "hello") throw new Error(`cold request answered ${res.status}`);
    const ms = performance.now() - t0;
    const base = await direct();
    if (i > 0) {
      cold.push(ms);
      own.push(base);
    } // round 0 warms caches
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const diffs = cold.map((c, i) => c - own[i]!);
  console.log(`machine: ${cpus().length} CPUs (${cpus()[0]?.model}), node ${process.version}`);
  console.log(
    `runs: ${runs}${FASTIFY ? `, Fastify app, ${NO_WARM ? "--no-warm" : "warm pool"}` : ""}`,
  );
  console.log(`| | median ms | min | max |\n|---|---:|---:|---:|`);
  for (const [name, xs] of [
    ["app's own start-up (spawn → first response)", own],
    ["cold start through caravan (request → response)", cold],
    ["difference (paired)", diffs],
  ] as const)
    console.log(
      `| ${name} | ${median(xs).toFixed(1)} | ${Math.min(...xs).toFixed(1)} | ${Math.max(...xs).toFixed(1)} |`,
    );
}

try {
  await main();
} finally {
  spawnSync(process.execPath, [BIN, "server", "stop"], { cwd: dir, env });
  rmSync(dir, { recursive: true, force: true });
}
