/**
 * How fast the CLI starts: `npx tsx bench/cli.ts [--runs N] [--root DIR]`.
 *
 * Each command is timed end to end as a user runs it (`node bin/caravan.js …`, the compiled
 * package), alternating in one run with the anchor `node -e 0` on the same machine; reported
 * as the ratio of medians. Commands: `--help`; `status` with the control plane running;
 * `plan examples/app-calling-app.ts`; an unchanged `deploy examples/app-calling-app.ts`.
 * Targets (issue 14): --help and status <= 1.6x, plan <= 3x, unchanged deploy <= 2x.
 * `plan` and the deploy meet their files unchanged (a plan reuses its last result since
 * issue 14's plan cache). Then `plan --json` of a generated 20,000-environment file against a
 * 10-environment one (alternating), each file edited before every run so that each is loaded
 * and planned in full: target <= 1 s more.
 *
 * `--root DIR` measures the caravan checkout (built) in DIR instead of this one: the same
 * script gives the before and after figures.
 *
 * Beside wall time, the CPU time each command's process used (user + system, from the
 * children's totals in /proc/self/stat, Linux): on a shared, loaded machine wall times
 * stretch with the load, CPU times much less.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { cpus, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";

const arg = (name: string) =>
  process.argv.includes(name) ? process.argv[process.argv.indexOf(name) + 1] : undefined;
const ROOT = resolve(arg("--root") ?? join(import.meta.dirname, ".."));
const BIN = join(ROOT, "bin/caravan.js");
const runs = Number(arg("--runs")) || 15;
const home = mkdtempSync(join(tmpdir(), "caravan-bench-cli-"));
const env = { ...process.env, CARAVAN_HOME: home, NO_COLOR: "1" };
const EXAMPLE = "examples/app-calling-app.ts";

/** CPU ms used by this process's waited-for children so far (clock ticks of 10 ms). */
function childrenCpuMs(): number {
  const fields = readFileSync("/proc/self/stat", "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[13]) + Number(fields[14])) * 10; // cutime, cstime
}

/** CPU ms per label, summed over its runs. */
const cpu = new Map<string, { ms: number; runs: number }>();

function time(args: string[], label = args.join(" ")): number {
  const c0 = childrenCpuMs();
  const t0 = performance.now();
  const r = spawnSync(process.execPath, args, { cwd: ROOT, env, stdio: "ignore" });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${args.join(" ")} exited ${r.status}`);
  const used = cpu.get(label) ?? { ms: 0, runs: 0 };
  cpu.set(label, { ms: used.ms + childrenCpuMs() - c0, runs: used.runs + 1 });
  return ms;
}

const cpuMean = (label: string) => cpu.get(label)!.ms / cpu.get(label)!.runs;

/**
 * A file that declares `n` environments in a loop, each depending on up to 10 earlier ones (5
 * on average), one in four an app: what `caravan plan` pays per environment (construction,
 * validation, planning, JSON), not the parsing of a long file.
 */
function generated(dir: string, n: number, edit = 0): string {
  const file = join(dir, `envs-${n}.ts`);
  writeFileSync(
    file,
    `// edit ${edit}: a new file each run, never a recorded plan
import { AppEnvironment, TaskEnvironment, type Environment } from "caravan-deploy";
let seed = 42;
const random = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
const envs: Environment[] = [];
for (let i = 0; i < ${n}; i++) {
  const deps = new Set<Environment>();
  const k = Math.min(i, Math.floor(random() * 11));
  while (deps.size < k) deps.add(envs[Math.floor(random() * i)]!);
  const name = \`env-\${i.toString(36)}\`;
  envs.push(
    i % 4 === 0
      ? new AppEnvironment({ name, dependsOn: [...deps], command: ["node", "server.js"] })
      : new TaskEnvironment({ name, dependsOn: [...deps] }),
  );
}
`,
  );
  return file;
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
      anchor.push(time(["-e", "0"], "anchor"));
      samples.get(name)!.push(time(args, name));
    }
  }
  const base = median(anchor);
  console.log(
    `machine: ${cpus().length} x ${cpus()[0]?.model}, node ${process.version}; ${runs} runs each; ${ROOT}`,
  );
  console.log(`node -e 0: median ${base.toFixed(1)} ms, cpu ${cpuMean("anchor").toFixed(1)} ms`);
  for (const [name, , target] of commands) {
    const m = median(samples.get(name)!);
    const ratio = m / base;
    console.log(
      `${name.padEnd(17)} median ${m.toFixed(1).padStart(7)} ms  ${ratio.toFixed(2)}x node -e 0  (target <= ${target}x: ${ratio <= target ? "met" : "MISSED"});  cpu ${cpuMean(name).toFixed(1)} ms, ${(cpuMean(name) / cpuMean("anchor")).toFixed(2)}x`,
    );
  }

  // Size: plan --json of 20,000 environments against 10, alternating.
  const dir = join(home, "generated");
  mkdirSync(dir);
  writeFileSync(join(dir, "package.json"), '{ "type": "module" }\n');
  const [small, large] = [generated(dir, 10), generated(dir, 20_000)];
  const sizes = { small: [] as number[], large: [] as number[] };
  time([BIN, "plan", small, "--json"]); // warm the file system cache
  time([BIN, "plan", large, "--json"]);
  for (let i = 0; i < Math.max(5, Math.ceil(runs / 2)); i++) {
    generated(dir, 10, i);
    sizes.small.push(time([BIN, "plan", small, "--json"], "small"));
    generated(dir, 20_000, i);
    sizes.large.push(time([BIN, "plan", large, "--json"], "large"));
  }
  const more = median(sizes.large) - median(sizes.small);
  console.log(
    `plan --json: 10 environments median ${median(sizes.small).toFixed(0)} ms, 20,000 median ${median(sizes.large).toFixed(0)} ms: ${more.toFixed(0)} ms more  (target <= 1000 ms: ${more <= 1000 ? "met" : "MISSED"});  cpu ${(cpuMean("large") - cpuMean("small")).toFixed(0)} ms more`,
  );
} finally {
  spawnSync(process.execPath, [BIN, "server", "stop"], { env, stdio: "ignore" });
  rmSync(home, { recursive: true, force: true });
}
