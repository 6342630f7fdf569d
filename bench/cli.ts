/**
 * How fast the CLI starts: `npx tsx bench/cli.ts [--runs N]`.
 *
 * Each command is timed end to end as a user runs it (`node bin/caravan.js …`, the compiled
 * package), alternating in one run with the anchor `node -e 0` on the same machine; reported
 * as the ratio of medians. Commands: `--help`; `status` with the control plane running;
 * `plan examples/app-calling-app.ts`; an unchanged `deploy examples/app-calling-app.ts`.
 * Targets (issue 14): --help and status <= 1.6x, plan <= 3x, unchanged deploy <= 2x.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";

const ROOT = resolve(import.meta.dirname, "..");
const BIN = join(ROOT, "bin/caravan.js");
const runs = Number(process.argv[process.argv.indexOf("--runs") + 1]) || 15;
const home = mkdtempSync(join(tmpdir(), "caravan-bench-cli-"));
const env = { ...process.env, CARAVAN_HOME: home, NO_COLOR: "1" };
const EXAMPLE = "examples/app-calling-app.ts";

function time(args: string[]): number {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { cwd: ROOT, env, stdio: "ignore" });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${args.join(" ")} exited ${r.status}`);
  return ms;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const commands: [string, string[], number][] = [
  ["--help", [BIN, "--help"], 1.6],
  ["status", [BIN, "status"], 1.6],
  ["plan", [BIN, "plan", EXAMPLE], 3],
  ["unchanged deploy", [BIN, "deploy", EXAMPLE], 2],
];

try {
  // The control plane runs and the example is deployed: status and deploy meet it warm.
  time([BIN, "deploy", EXAMPLE]);
  for (const [, args] of commands) time(args); // warm the file system cache
  const anchor: number[] = [];
  const samples = new Map<string, number[]>(commands.map(([n]) => [n, []]));
  for (let i = 0; i < runs; i++) {
    for (const [name, args] of commands) {
      anchor.push(time(["-e", "0"]));
      samples.get(name)!.push(time(args));
    }
  }
  const base = median(anchor);
  console.log(
    `machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}; ${runs} runs each`,
  );
  console.log(`node -e 0: median ${base.toFixed(1)} ms`);
  for (const [name, , target] of commands) {
    const m = median(samples.get(name)!);
    const ratio = m / base;
    console.log(
      `${name.padEnd(17)} median ${m.toFixed(1).padStart(7)} ms  ${ratio.toFixed(2)}x node -e 0  (target <= ${target}x: ${ratio <= target ? "met" : "MISSED"})`,
    );
  }
} finally {
  spawnSync(process.execPath, [BIN, "server", "stop"], { env, stdio: "ignore" });
  rmSync(home, { recursive: true, force: true });
}
