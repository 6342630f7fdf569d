/**
 * A pool of warm runtime processes: node already started, caravan's runtime and the
 * frameworks recent deploys imported already loaded, waiting to be given to one JS app or task
 * worker (runtime/warm.ts is the other side). A launch that takes one pays only for loading
 * the app's own bundle; a cold one pays node's start and every import too.
 *
 * Rules: a warm process holds no user code and no secret until it is assigned (it has the
 * base environment every app gets, and imports only caravan's runtime and packages from
 * node_modules); it is assigned once, to one app, and never comes back; it is spawned with a
 * cold process's node, flags and argv. The pool's size is bounded by the latest deploy's
 * `warmPool.size` and by memory (its processes' measured RSS against a share of the machine's),
 * and it is refilled one process at a time, only while no other start is in progress.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import {
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  readdirSync,
  realpathSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { isBuiltin } from "node:module";
import { availableParallelism, freemem, totalmem } from "node:os";
import { dirname, join } from "node:path";
import type { DeployRequest, WarmPoolSettings } from "../contract.ts";
import {
  WARM_ENV,
  WARM_ROOM_BYTES,
  WARM_ROOM_ENV,
  environBytes,
  type RuntimeMessage,
} from "../../runtime/protocol.ts";
import { signalGroup } from "./os.ts";
import { baseEnv, runtimeArgv } from "./supervisor.ts";

/** The pool a deploy gets when its config says nothing. */
export const DEFAULT_WARM_POOL_SIZE = 4;
/** The most warm processes a config may ask for. */
export const MAX_WARM_POOL_SIZE = 64;
/** The packages a pool learns to preload from deploys (see importsOfBundle). */
const LEARNED_FRAMEWORKS = new Set([
  "fastify",
  "hono",
  "@hono/node-server",
  "express",
  "koa",
  "@koa/router",
  "h3",
  "ws",
]);

/** Packages preloaded at most (the most recently imported first). */
export const MAX_PRELOAD = 16;
/** The share of the machine's memory the pool may hold at most. */
const MEMORY_SHARE = 1 / 8;
/** No refill while less than this share of the machine's memory is free. */
const MIN_FREE_SHARE = 0.1;
/** What a warm process is assumed to cost until one reported its RSS. */
const RSS_GUESS = 64 * 1024 * 1024;
/** How often a pool below its size looks whether it may refill. */
const REFILL_EVERY_MS = 100;

interface Warm {
  child: ChildProcess;
  /** The runtime it runs: only a launch of the same runtime may take it. */
  runtimeMain: string;
  /** Resident memory once warm. */
  rss?: number;
  listeners: { message: (m: RuntimeMessage) => void; exit: () => void };
}

/** The pool's counters (the daemon's health answer shows them). */
export interface WarmPoolStats {
  /** Warm processes wanted (the latest deploy's `warmPool.size`). */
  size: number;
  /** What memory allows of it now. */
  limit: number;
  /** Warm and waiting to be taken. */
  idle: number;
  /** Starting up. */
  warming: number;
  /** Ever handed to an app or task worker. */
  handedOut: number;
  /** Resident memory of the idle processes, and of one on average (bytes). */
  rssBytes: number;
  rssPerProcess: number;
  /** Packages a warm process imports (besides caravan's runtime). */
  preload: string[];
  /** The idle processes (to measure what they cost). */
  pids: number[];
}

export class WarmPool {
  private readonly idle: Warm[] = [];
  private readonly warming = new Set<Warm>();
  private size = 0;
  private runtimeMain?: string;
  /** Packages to preload, most recent first, and the node_modules they resolve from. */
  private packages: string[] = [];
  private modulesDir?: string;
  /** Packages that threw while preloading: never preloaded again by this pool. */
  private readonly refused = new Set<string>();
  /** Bare imports of each bundle seen (by its entry file), read once. */
  private readonly importsOf = new Map<string, string[]>();
  private rssEstimate = RSS_GUESS;
  private handedOut = 0;
  private closed = false;
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly opts: {
      /** Where the preload modules are written (`$CARAVAN_HOME/warm`). */
      dir: string;
      /** Where warm processes write until assigned. */
      logFile: string;
      /** Whether refilling may use the CPU now (no app is starting). */
      quiet: () => boolean;
    },
  ) {
    this.timer = setInterval(() => this.refill(), REFILL_EVERY_MS);
    this.timer.unref();
  }

  /**
   * Learns from a deploy request: the pool's size and preload setting, the runtime its
   * processes run, and (unless pinned or off) the packages its bundle imports.
   */
  note(req: DeployRequest): void {
    if (this.closed) return;
    const settings: WarmPoolSettings = req.warmPool ?? {};
    this.size = Math.min(settings.size ?? DEFAULT_WARM_POOL_SIZE, MAX_WARM_POOL_SIZE);
    if (this.runtimeMain !== req.code.runtime) {
      this.runtimeMain = req.code.runtime;
      // Processes of another runtime (caravan was upgraded) can never be taken.
      for (const w of [...this.idle]) if (w.runtimeMain !== this.runtimeMain) this.retire(w);
    }
    const modulesDir = realModules(dirname(req.code.entry));
    if (settings.preload === false || !modulesDir) {
      this.packages = [];
    } else {
      const wanted = settings.preload ?? this.importsOfBundle(req.code.entry);
      // One project's packages at a time: those of the latest deploy's node_modules.
      const kept = modulesDir === this.modulesDir && !settings.preload ? this.packages : [];
      this.packages = [...new Set([...wanted, ...kept])]
        .filter((p) => !this.refused.has(p))
        .slice(0, MAX_PRELOAD);
      this.modulesDir = modulesDir;
    }
    this.trim();
  }

  /** Whether a process of this request, with this whole environment, may start warm. */
  static allows(req: DeployRequest, env: Record<string, string>): boolean {
    if ((req.warmPool?.size ?? DEFAULT_WARM_POOL_SIZE) === 0) return false;
    // Read by node as it starts, which a running process cannot redo: such an app starts cold.
    if (Object.keys(env).some((k) => /^(NODE_|UV_|OPENSSL_|SSL_CERT_)/.test(k))) return false;
    return environBytes(env) <= WARM_ROOM_BYTES;
  }

  /**
   * A warm process of `runtimeMain`, now the caller's alone (the pool forgets it), or
   * undefined when none is idle.
   */
  take(runtimeMain: string): ChildProcess | undefined {
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const w = this.idle[i]!;
      if (w.runtimeMain !== runtimeMain) continue;
      if (!w.child.connected || w.child.exitCode !== null || w.child.signalCode !== null) continue;
      this.idle.splice(i, 1);
      w.child.off("message", w.listeners.message);
      w.child.off("exit", w.listeners.exit);
      this.handedOut++;
      return w.child;
    }
    return undefined;
  }

  stats(): WarmPoolStats {
    const rss = this.idle.reduce((sum, w) => sum + (w.rss ?? 0), 0);
    return {
      size: this.size,
      limit: this.limit(),
      idle: this.idle.length,
      warming: this.warming.size,
      handedOut: this.handedOut,
      rssBytes: rss,
      rssPerProcess: this.idle.length ? Math.round(rss / this.idle.length) : 0,
      preload: [...this.packages],
      pids: this.idle.map((w) => w.child.pid!),
    };
  }

  /** Stops every warm process and waits until they are gone. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    const all = [...this.idle, ...this.warming];
    // The children are unref'd: without this, a process that closes its control plane and
    // then exits (`caravan serve`) would find its event loop empty before the exits are seen.
    const keepAlive = setInterval(() => {}, 60_000);
    try {
      await Promise.all(all.map((w) => this.retire(w)));
    } finally {
      clearInterval(keepAlive);
    }
  }

  /** How many warm processes memory allows of `size`. */
  private limit(): number {
    const byMemory = Math.floor((totalmem() * MEMORY_SHARE) / this.rssEstimate);
    return Math.max(0, Math.min(this.size, byMemory));
  }

  /** Starts one more warm process when the pool is short, nothing else starts and memory allows. */
  private refill(): void {
    if (this.closed || !this.runtimeMain) return;
    const atOnce = Math.max(1, Math.floor(availableParallelism() / 2));
    if (this.warming.size >= atOnce) return;
    if (this.idle.length + this.warming.size >= this.limit()) return;
    if (freemem() < totalmem() * MIN_FREE_SHARE || !this.opts.quiet()) return;
    // A runtime removed since (an old caravan's, collected): nothing to warm until a deploy.
    if (!existsSync(this.runtimeMain)) return;
    this.spawnWarm(this.runtimeMain);
  }

  private spawnWarm(runtimeMain: string): void {
    const modules = this.preloadModules(runtimeMain);
    mkdirSync(this.opts.dir, { recursive: true });
    mkdirSync(dirname(this.opts.logFile), { recursive: true });
    const fd = openSync(this.opts.logFile, "a");
    let child: ChildProcess;
    try {
      // A cold process's node, flags, argv and base environment; no app's anything.
      child = spawn(process.execPath, runtimeArgv(runtimeMain), {
        stdio: ["ignore", fd, fd, "ipc"],
        detached: true,
        env: {
          ...baseEnv(),
          [WARM_ENV]: JSON.stringify(modules.map((m) => m.path)),
          [WARM_ROOM_ENV]: " ".repeat(WARM_ROOM_BYTES),
        },
        cwd: this.opts.dir,
      });
    } finally {
      closeSync(fd);
    }
    if (child.pid === undefined) {
      child.once("error", () => {});
      return;
    }
    child.unref();
    // The channel must not keep the control plane's event loop alive either.
    (child.channel as { unref?: () => void } | undefined)?.unref?.();
    const w: Warm = {
      child,
      runtimeMain,
      listeners: {
        message: (m) => {
          if (m?.type === "warm") {
            w.rss = m.rss;
            this.rssEstimate = Math.max(m.rss, 1);
            this.warming.delete(w);
            this.idle.push(w);
            this.trim();
          } else if (m?.type === "warm-failed") {
            const pkg = modules.find((x) => x.path === m.module)?.pkg;
            if (pkg) {
              this.refused.add(pkg);
              this.packages = this.packages.filter((p) => p !== pkg);
            }
          }
        },
        exit: () => {
          this.warming.delete(w);
          const i = this.idle.indexOf(w);
          if (i >= 0) this.idle.splice(i, 1);
        },
      },
    };
    child.on("message", w.listeners.message);
    child.once("exit", w.listeners.exit);
    child.once("error", () => {});
    this.warming.add(w);
  }

  /** Stops idle processes beyond what the pool may hold now (the oldest first). */
  private trim(): void {
    while (this.idle.length && this.idle.length + this.warming.size > this.limit())
      void this.retire(this.idle[0]!);
  }

  private retire(w: Warm): Promise<void> {
    this.warming.delete(w);
    const i = this.idle.indexOf(w);
    if (i >= 0) this.idle.splice(i, 1);
    const { child } = w;
    if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
    const gone = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    // Nothing of anyone's is in it: no grace needed.
    signalGroup(child.pid!, "", "SIGKILL");
    return gone;
  }

  /**
   * What a warm process imports: caravan's public entry points (the runtime's own code) and
   * one small module per package, in `<dir>/<hash of node_modules>/` beside a link to that
   * node_modules, so a package resolves to the very file the app's bundle will import (node
   * caches modules by real path) and a package that throws is known by name.
   */
  private preloadModules(runtimeMain: string): { path: string; pkg?: string }[] {
    const publicDir = join(dirname(dirname(runtimeMain)), "public");
    const own = existsSync(publicDir)
      ? readdirSync(publicDir)
          .filter((f) => f.endsWith(".js"))
          .map((f) => ({ path: join(publicDir, f) }))
      : [];
    if (!this.modulesDir || !this.packages.length) return own;
    const dir = join(this.opts.dir, hash(this.modulesDir).slice(0, 16));
    mkdirSync(dir, { recursive: true });
    const link = join(dir, "node_modules");
    if (!existsSync(link)) {
      try {
        symlinkSync(this.modulesDir, link, "dir");
      } catch {
        /* made concurrently */
      }
    }
    return [
      ...own,
      ...this.packages.map((pkg) => {
        const source = preloadSource(pkg, dependenciesOf(this.modulesDir!, pkg));
        // Named by its content: a package upgraded since (other dependencies) gets a new one.
        const path = join(dir, `${hash(source).slice(0, 16)}.mjs`);
        if (!existsSync(path)) writeFileSync(path, source);
        return { path, pkg };
      }),
    ];
  }

  /**
   * The frameworks a bundle imports (esbuild leaves packages as top-level `import … from
   * "pkg"`). Only known frameworks are learned: a package that reads its environment or the
   * working directory when imported (`dotenv/config`, `config`, an APM agent) would do it in
   * the pool's before the app's are set; `preload` in the config names any package.
   */
  private importsOfBundle(entry: string): string[] {
    let found = this.importsOf.get(entry);
    if (!found) {
      found = bareImports(readText(entry)).filter((p) => LEARNED_FRAMEWORKS.has(p));
      this.importsOf.set(entry, found);
      if (this.importsOf.size > 64) this.importsOf.delete(this.importsOf.keys().next().value!);
    }
    return found;
  }
}

/**
 * The module a warm process imports for a package: the package, then its own dependencies
 * (its package.json's), resolved from the package as it resolves them. A framework may load
 * those only when first used (fastify requires ajv and its schema compilers, some 110
 * modules, when the first instance is made), which the app's start would pay otherwise. A
 * dependency that cannot be required here (ESM-only on Node 20, or it throws) is left to the
 * app: a module that failed to load is not cached, so the app loads it as a cold one would.
 */
export function preloadSource(pkg: string, dependencies: string[]): string {
  const spec = JSON.stringify(pkg);
  if (!dependencies.length) return `import ${spec};\n`;
  return [
    `import ${spec};`,
    'import { createRequire } from "node:module";',
    `const require = createRequire(import.meta.resolve(${spec}));`,
    `for (const dependency of ${JSON.stringify(dependencies)}) {`,
    "  try {",
    "    require(dependency);",
    "  } catch {}",
    "}",
    "",
  ].join("\n");
}

/** The `dependencies` a package's package.json names (none when it cannot be read). */
function dependenciesOf(modulesDir: string, spec: string): string[] {
  const parts = spec.split("/");
  const name = spec.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!;
  try {
    const manifest = JSON.parse(readText(join(modulesDir, name, "package.json"))) as {
      dependencies?: Record<string, string>;
    };
    return Object.keys(manifest.dependencies ?? {});
  } catch {
    return [];
  }
}

/** Bare package specifiers among a module's static imports (no builtins, no paths). */
export function bareImports(source: string): string[] {
  const out = new Set<string>();
  for (const m of source.matchAll(/^import\s*(?:[^'";]*?\bfrom\s*)?["']([^"']+)["']/gm)) {
    const spec = m[1]!;
    if (/^[./]/.test(spec) || spec.includes(":") || isBuiltin(spec)) continue;
    out.add(spec);
  }
  return [...out];
}

function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

/** The real node_modules a snapshot's packages resolve from (its directory's link), if any. */
function realModules(bundleDir: string): string | undefined {
  try {
    return realpathSync(join(bundleDir, "node_modules"));
  } catch {
    return undefined;
  }
}

function hash(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}
