/**
 * CPU profile of one warm-started app process, from its assignment to its `ready`:
 * `npx tsx bench/profile-warm.ts [--layout file|modules] [--app NAME] [--keep]`.
 *
 * It snapshots the fastify fan-out of bench/deploy.ts (20 leaves and a root, in one file or a
 * module per app) as a deploy would, starts caravan's runtime as the warm pool does (same
 * argv, `CARAVAN_WARM` preloading fastify) under `--cpu-prof`, and once it is warm plays the
 * control plane's part: `assign` (the app's environment), `start` on `loaded`, then SIGTERM on
 * `ready`. It prints the phases as the parent saw them (assign → loaded → ready) and the
 * profile's samples taken after the assignment, by function and by where the code comes from
 * (the app's bundle, fastify and the packages, caravan's runtime, node).
 */
import { spawn } from "node:child_process";
import {
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { performance } from "node:perf_hooks";
import { snapshotCode } from "../src/backends/snapshot.ts";
import { loadEnvironments } from "../src/sdk/loader.ts";
import type { RuntimeConfig, RuntimeMessage } from "../src/runtime/protocol.ts";
import { WARM_ENV, WARM_ROOM_BYTES, WARM_ROOM_ENV } from "../src/runtime/protocol.ts";

const ROOT = resolve(import.meta.dirname, "..");
const option = (name: string) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const LAYOUT = option("layout") ?? "modules";
const APP = option("app") ?? "fastify-fan-leaf-01";
const KEEP = process.argv.includes("--keep");

const WORK = mkdtempSync(join(tmpdir(), "caravan-profile-warm-"));
const ident = (name: string) => name.replace(/-/g, "_");
const leaves = Array.from(
  { length: 20 },
  (_, i) => `fastify-fan-leaf-${String(i + 1).padStart(2, "0")}`,
);
const apps = [
  ...leaves.map((n) => ({ name: n, deps: [] as string[] })),
  { name: "fastify-fan-root", deps: leaves },
];

/** The fan-out as bench/deploy.ts declares it (without its events file). */
function writeProject(): string {
  mkdirSync(join(WORK, "node_modules"));
  symlinkSync(ROOT, join(WORK, "node_modules/caravan-deploy"), "dir");
  symlinkSync(join(ROOT, "node_modules/fastify"), join(WORK, "node_modules/fastify"), "dir");
  writeFileSync(join(WORK, "package.json"), JSON.stringify({ type: "module" }));
  const body = (a: { name: string; deps: string[] }, importsDeps: boolean) =>
    `${importsDeps ? a.deps.map((d) => `import { ${ident(d)} } from "./${d}.ts";\n`).join("") : ""}const f_${ident(a.name)} = Fastify();
f_${ident(a.name)}.get("/", async () => ${JSON.stringify(a.name)});
f_${ident(a.name)}.addHook("onReady", () => new Promise<void>((r) => setTimeout(r, 1)));
export const ${ident(a.name)} = new FastifyAppEnvironment({ name: ${JSON.stringify(a.name)}, app: f_${ident(a.name)}, requiresAuth: false, dependsOn: [${a.deps.map(ident).join(", ")}] });
`;
  const head = `import Fastify from "fastify";\nimport { FastifyAppEnvironment } from "caravan-deploy/fastify";\n`;
  const entry = join(WORK, "graph.ts");
  if (LAYOUT === "modules") {
    mkdirSync(join(WORK, "graph"));
    for (const a of apps) writeFileSync(join(WORK, "graph", `${a.name}.ts`), head + body(a, true));
    writeFileSync(
      entry,
      apps.map((a) => `export { ${ident(a.name)} } from "./graph/${a.name}.ts";\n`).join(""),
    );
  } else {
    writeFileSync(entry, head + apps.map((a) => body(a, false)).join("\n"));
  }
  return entry;
}

const freePort = () =>
  new Promise<number>((res) => {
    const s = createServer().listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });

interface Profile {
  nodes: {
    id: number;
    callFrame: { functionName: string; url: string; lineNumber: number };
    children?: number[];
  }[];
  startTime: number;
  samples: number[];
  timeDeltas: number[];
}

function where(url: string): string {
  if (!url) return "(vm / gc / idle)";
  if (url.includes("/bundles/")) return "the app's bundle";
  if (url.includes("/node_modules/"))
    return `package ${/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)![1]}`;
  if (url.includes("/runtime/")) return "caravan's runtime";
  if (url.startsWith("node:")) return "node internals";
  return url;
}

async function main(): Promise<void> {
  const entry = writeProject();
  const { environments } = await loadEnvironments(entry);
  const snapshot = await snapshotCode(
    entry,
    { bundles: join(WORK, "bundles"), runtime: join(WORK, "runtime") },
    environments,
  );
  const env = environments.find((e) => e.name === APP);
  if (!env) throw new Error(`no app ${APP}`);
  // (`--root`-less runs of an older checkout: no own bundles, no preloaded dependencies.)
  const code = snapshot.codeOf?.(env) ?? snapshot.code;
  const profDir = join(WORK, "prof");
  const port = await freePort();
  const config: RuntimeConfig = {
    kind: "app",
    name: APP,
    project: "default",
    domain: "development",
    entry: code.ownEntry ?? code.entry,
    sourceRoot: WORK,
    port,
    host: "127.0.0.1",
    endpoints: Object.fromEntries(env.dependsOn.map((d) => [d.name, "http://127.0.0.1:1"])),
    publicEndpoints: {},
    inputs: {},
  };
  const baseEnv = { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "" };
  // The module the pool would write for fastify (warm-pool.ts), beside a node_modules link.
  const pool = (await import("../src/backends/local/warm-pool.ts")) as {
    preloadSource?: (pkg: string, deps: string[]) => string;
  };
  const fastifyDeps = Object.keys(
    (
      JSON.parse(readFileSync(join(WORK, "node_modules/fastify/package.json"), "utf8")) as {
        dependencies: Record<string, string>;
      }
    ).dependencies,
  );
  const fastifyMain = join(WORK, "preload-fastify.mjs");
  writeFileSync(fastifyMain, pool.preloadSource?.("fastify", fastifyDeps) ?? 'import "fastify";\n');
  const child = spawn(
    process.execPath,
    [
      "--cpu-prof",
      `--cpu-prof-dir=${profDir}`,
      "--cpu-prof-interval=100",
      "--enable-source-maps",
      code.runtime,
    ],
    {
      stdio: ["ignore", "inherit", "inherit", "ipc"],
      env: {
        ...baseEnv,
        [WARM_ENV]: JSON.stringify([fastifyMain]),
        [WARM_ROOM_ENV]: " ".repeat(WARM_ROOM_BYTES),
      },
      cwd: WORK,
    },
  );
  const t: Record<string, number> = {};
  const now = () => performance.now();
  await new Promise<void>((res, rej) => {
    child.on("message", (m: RuntimeMessage) => {
      if (m.type === "warm") {
        // Let it settle (as a pool's idle process would), then assign.
        setTimeout(() => {
          t.assign = now();
          child.send({
            type: "assign",
            env: { ...baseEnv, CARAVAN_RUNTIME: JSON.stringify(config), PORT: String(port) },
            cwd: WORK,
            logFile: join(WORK, "app.log"),
          });
        }, 300);
      } else if (m.type === "loaded") {
        t.loaded = now();
        child.send({ type: "start" });
      } else if (m.type === "ready") {
        t.ready = now();
        child.kill("SIGTERM");
        res();
      } else if (m.type === "failed" || m.type === "warm-failed") rej(new Error(JSON.stringify(m)));
    });
    child.once("exit", (c) =>
      t.ready
        ? undefined
        : rej(new Error(`exited ${c}: ${readFileSync(join(WORK, "app.log"), "utf8")}`)),
    );
  });
  await new Promise((r) => child.once("exit", r));
  const profile = JSON.parse(
    readFileSync(join(profDir, readdirSync(profDir)[0]!), "utf8"),
  ) as Profile;
  // Samples after the idle wait for the assignment: the last run of (idle) samples of 250 ms+.
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  let at = 0;
  let from = 0;
  let idleSince = -1;
  const times: number[] = [];
  for (let i = 0; i < profile.samples.length; i++) {
    at += profile.timeDeltas[i]!;
    times.push(at);
    const idle = byId.get(profile.samples[i]!)!.callFrame.functionName === "(idle)";
    if (idle && idleSince < 0) idleSince = at;
    if (!idle) {
      if (idleSince >= 0 && at - idleSince > 250_000) from = i;
      idleSince = -1;
    }
  }
  const selfBy = new Map<string, number>();
  const placeBy = new Map<string, number>();
  let total = 0;
  for (let i = from; i < profile.samples.length; i++) {
    const dt = (times[i + 1] ?? times[i]!) - times[i]!;
    const node = byId.get(profile.samples[i]!)!;
    const f = node.callFrame;
    if (f.functionName === "(idle)") continue;
    total += dt;
    const key = `${f.functionName || "(anonymous)"} ${where(f.url)}${f.url ? `:${f.lineNumber + 1}` : ""}`;
    selfBy.set(key, (selfBy.get(key) ?? 0) + dt);
    placeBy.set(where(f.url), (placeBy.get(where(f.url)) ?? 0) + dt);
  }
  const ms = (us: number) => (us / 1000).toFixed(1);
  const top = (m: Map<string, number>, n: number) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([k, v]) => `| ${k} | ${ms(v)} |`)
      .join("\n");
  process.stdout.write(
    `layout ${LAYOUT}, app ${APP}, bundle ${config.entry === code.entry ? "entry.js (every app)" : "its own module's"}\n` +
      `assign -> loaded ${(t.loaded! - t.assign!).toFixed(1)} ms, loaded -> ready ${(t.ready! - t.loaded!).toFixed(1)} ms (parent's clock; includes the app's 1 ms onReady)\n` +
      `CPU after the assignment (not idle): ${ms(total)} ms\n\n| where | ms |\n|---|---:|\n${top(placeBy, 12)}\n\n| function (self) | ms |\n|---|---:|\n${top(selfBy, 15)}\n`,
  );
}

try {
  await main();
} finally {
  if (!KEEP) rmSync(WORK, { recursive: true, force: true });
  else process.stderr.write(`kept ${WORK}\n`);
}
