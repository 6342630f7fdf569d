/**
 * What open web consoles cost the control plane: `npx tsx bench/console.ts [--runs N]
 * [--watchers W] [--apps A]`.
 *
 * A graph of A command apps (default 20: test/fixtures/scale/fanout.ts) is deployed into a
 * temporary CARAVAN_HOME. Rounds alternate the anchor (no console open) and the subject (W
 * live streams open, `GET /v1/watch`, default 10), and measure in each:
 *   status   the median latency of 50 sequential `GET /v1/status` (what the CLI asks)
 *   idle cpu the daemon's CPU time per second over 3 s with nothing happening (the streams
 *            compute status every second for traffic)
 * Then, with one stream open, how long a change takes to reach it: `POST /v1/stop` of a leaf
 * until the stream shows it stopped, against the time the stop call itself takes to answer.
 * Printed as medians and ratios (subject / anchor) of the same run.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "bin/caravan.js");
const arg = (name: string, fallback: number) =>
  Number(process.argv[process.argv.indexOf(name) + 1]) || fallback;
const runs = arg("--runs", 7);
const watchers = arg("--watchers", 10);
const apps = arg("--apps", 20);
const home = mkdtempSync(join(tmpdir(), "caravan-bench-console-"));
const env = { ...process.env, CARAVAN_HOME: home, NO_COLOR: "1", FANOUT_APPS: String(apps) };
const SCOPE = { project: "default", domain: "development" };
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function cli(args: string[]): void {
  const r = spawnSync(process.execPath, [BIN, ...args], { cwd: ROOT, env, encoding: "utf8" });
  if (r.status !== 0) throw new Error(`caravan ${args.join(" ")}: ${r.stderr}`);
}

/** The daemon's user + system CPU time so far, in ms. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100; // clock ticks: 100 Hz
}

/** Opens a live stream; `seen` resolves when a status message satisfies `until`. */
function openStream(url: string, token: string) {
  const abort = new AbortController();
  const waiters: { until: (envs: any[]) => boolean; resolve: (t: number) => void }[] = [];
  const ready = fetch(`${url}/v1/watch?${new URLSearchParams(SCOPE)}`, {
    headers: { authorization: `Bearer ${token}` },
    signal: abort.signal,
  }).then((res) => {
    void (async () => {
      const decoder = new TextDecoder();
      let buffer = "";
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (!block.startsWith("event: status")) continue;
          const envs = JSON.parse(block.slice(block.indexOf("data: ") + 6)).environments;
          for (const w of [...waiters])
            if (w.until(envs)) {
              waiters.splice(waiters.indexOf(w), 1);
              w.resolve(performance.now());
            }
        }
      }
    })().catch(() => {});
  });
  return {
    ready,
    seen: (until: (envs: any[]) => boolean) =>
      new Promise<number>((resolve) => waiters.push({ until, resolve })),
    close: () => abort.abort(),
  };
}

try {
  cli(["deploy", join(ROOT, "test/fixtures/scale/fanout.ts"), "--json"]);
  const daemon = JSON.parse(readFileSync(join(home, "daemon.json"), "utf8")) as {
    pid: number;
    url: string;
  };
  const token = readFileSync(join(home, "token"), "utf8").trim();
  const headers = { authorization: `Bearer ${token}` };
  const statusLatency = async () => {
    const times: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t0 = performance.now();
      await (await fetch(`${daemon.url}/v1/status`, { headers })).json();
      times.push(performance.now() - t0);
    }
    return median(times);
  };
  const idleCpu = async () => {
    const before = cpuMs(daemon.pid);
    await new Promise((r) => setTimeout(r, 3000));
    return (cpuMs(daemon.pid) - before) / 3;
  };

  const results = { status: [[], []] as number[][], cpu: [[], []] as number[][] };
  await statusLatency(); // warm-up
  for (let round = 0; round < runs; round++) {
    for (const subject of [0, 1]) {
      const streams = subject
        ? Array.from({ length: watchers }, () => openStream(daemon.url, token))
        : [];
      await Promise.all(streams.map((s) => s.ready));
      results.status[subject]!.push(await statusLatency());
      results.cpu[subject]!.push(await idleCpu());
      for (const s of streams) s.close();
    }
  }

  // A change, seen by a stream, against the call that made it.
  const answer: number[] = [];
  const pushed: number[] = [];
  const stream = openStream(daemon.url, token);
  await stream.ready;
  for (let round = 0; round < runs; round++) {
    const stateOf = (envs: any[]) => envs.find((e) => e.name === "leaf-01")?.state;
    const stopped = stream.seen((envs) => stateOf(envs) === "stopped");
    const t0 = performance.now();
    const res = await fetch(`${daemon.url}/v1/stop`, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body: JSON.stringify({ scope: SCOPE, names: ["leaf-01"] }),
    });
    answer.push(performance.now() - t0);
    if (!res.ok) throw new Error(`stop answered ${res.status}`);
    pushed.push((await stopped) - t0);
    const ready = stream.seen((envs) => stateOf(envs) === "ready");
    await fetch(`${daemon.url}/v1/start`, {
      method: "POST",
      headers: { ...headers, "content-type": "application/json" },
      body: JSON.stringify({ scope: SCOPE, name: "leaf-01" }),
    });
    await ready;
  }
  stream.close();

  const row = (name: string, [anchor, subject]: number[][], unit: string) =>
    `| ${name} | ${median(anchor!).toFixed(2)} ${unit} | ${median(subject!).toFixed(2)} ${unit} | ${(median(subject!) / median(anchor!)).toFixed(2)}× |`;
  console.log(`${apps} apps, ${runs} rounds, ${watchers} streams open in the subject\n`);
  console.log("| measure | no console (anchor) | with consoles open | ratio |");
  console.log("|---|---:|---:|---:|");
  console.log(row("GET /v1/status, median latency", results.status, "ms"));
  console.log(row("daemon CPU while idle, per second", results.cpu, "ms"));
  console.log(row("stop call answered → stream shows it (one stream)", [answer, pushed], "ms"));
} finally {
  spawnSync(process.execPath, [BIN, "server", "stop"], { cwd: ROOT, env, stdio: "ignore" });
  rmSync(home, { recursive: true, force: true });
}
