/**
 * `caravan dev <file> [env…]`: deploy, stream prefixed logs, and redeploy on every save of the
 * file or of a local module it imports; Ctrl-C stops what it deployed (dependents first).
 *
 * How a reload works, and why: Node caches ES modules for the life of a process, and a
 * cache-busting query (`file.ts?v=2`) reloads only the entry, not the modules it imports —
 * the very files a user edits. So dev never imports the user's code. Each reload is a child
 * process, `caravan deploy <file> [env…] --json`, with a fresh module graph, talking to the
 * control plane daemon like any deploy: the engine there skips environments whose revision did
 * not change, and a changed app's new revision starts beside the old one, which serves until
 * the new one is ready (the gateway's zero-downtime replacement). A save that breaks the file
 * (a syntax error, failed validation, a cycle) fails in that child before anything starts, so
 * everything keeps running; dev prints the error and waits for the next save.
 *
 * dev itself watches (the files esbuild's metafile says the entry reaches: those its code
 * hashes cover), debounces saves (100 ms; one deploy at a time, a save during a deploy queues
 * one more), streams the apps' logs from the control plane and tears down on Ctrl-C. It
 * starts the daemon itself when none runs, and stops it again at the end if nothing else runs
 * there, so a dev session leaves nothing behind.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readFileSync, statSync, watch, type FSWatcher } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { type Command, Option } from "commander";
import type { Backend, EnvironmentStatus } from "../../backends/contract.ts";
import type { DaemonControl } from "../../backends/registry.ts";
import { CaravanError } from "../../errors.ts";
import type { ResolvedConfig } from "../../sdk/config.ts";
import type { CommandContext } from "../main.ts";
import { color, info, wholeNumber } from "../output.ts";
import { openBackend, scopeOptions, type ScopeFlags } from "../project.ts";

const PALETTE = [color.cyan, color.magenta, color.yellow, color.green, color.blue, color.red];
const DEBOUNCE_MS = 100;

interface DeploymentJSON {
  name: string;
  kind: string;
  status: "ready" | "unchanged" | "failed" | "skipped";
  revision: string | null;
  endpoint: string | null;
  error: string | null;
}

type DevFlags = ScopeFlags & { concurrency?: number };

/** The CLI's own entry (bin/caravan.js), which each reload runs: three levels above this module. */
function cliEntry(): string {
  const bin = fileURLToPath(new URL("../../../bin/caravan.js", import.meta.url));
  return existsSync(bin) ? bin : process.argv[1]!;
}

/** The user's files the entry reaches (itself and its local imports; packages stay out). */
async function sourcesOf(entry: string): Promise<string[] | undefined> {
  const { build, stop } = await import("esbuild");
  try {
    const r = await build({
      entryPoints: [entry],
      absWorkingDir: dirname(entry),
      bundle: true,
      platform: "node",
      format: "esm",
      packages: "external",
      metafile: true,
      write: false,
      outdir: "out",
      logLevel: "silent",
    });
    return Object.keys(r.metafile.inputs).map((f) => resolve(dirname(entry), f));
  } catch {
    return undefined; // it does not parse: the deploy says why
  } finally {
    // No esbuild service outlives a build: a long dev session keeps no idle child around.
    await stop();
  }
}

/** Whether an environment has anything running (a failed one may keep its old revision serving). */
const live = (s: EnvironmentStatus) => s.state !== "stopped" || s.pids.length > 0;

/** node:crypto, loaded when a session starts: declaring the command (`--help`) must not. */
let createHash: typeof import("node:crypto").createHash;

function digest(file: string): string {
  try {
    return createHash("sha256").update(readFileSync(file)).digest("hex");
  } catch {
    return "missing";
  }
}

export function registerDev(program: Command, ctx: CommandContext): void {
  scopeOptions(
    program
      .command("dev")
      .description(
        "Deploy, stream every app's logs, and redeploy on each save of the file or a module it imports (only what changed, without downtime). Ctrl-C stops it all (dependents first).",
      )
      .argument("<file>", "TypeScript or JavaScript file that declares environments")
      .argument("[env...]", "environments to deploy (with their dependencies); default: all")
      .addOption(
        new Option("--concurrency <n>", "most environments starting at once").argParser(
          wholeNumber("--concurrency", 1),
        ),
      )
      .addHelpText(
        "after",
        `
On a save (debounced, ${DEBOUNCE_MS} ms), the file is deployed again in a fresh process: only
environments whose revision changed get a new one, started beside the old one, which serves
until the new one is ready. A save that breaks the file (syntax error, failed validation, a
cycle) prints the error and leaves everything running. Environments run in the control plane
daemon (started if needed), so caravan status and caravan logs see them; Ctrl-C stops them,
dependents first, and the daemon too when dev started it and nothing else runs there.

Example:
  $ npx caravan dev caravan.ts`,
      ),
  ).action(async (file: string, names: string[], opts: DevFlags) => {
    const entry = resolve(file);
    if (!existsSync(entry) || !statSync(entry).isFile())
      throw new CaravanError(
        "USAGE",
        `${file}: no such file; give the file that declares environments`,
      );
    const { loadConfig } = await import("../../sdk/config.ts");
    ({ createHash } = await import("node:crypto"));
    const config = await loadConfig(dirname(entry), {
      project: opts.project,
      domain: opts.domain,
      backend: opts.backend,
      context: opts.context,
    });
    await new DevSession(entry, names, opts, config, ctx).run();
  });
}

class DevSession {
  private readonly abort = new AbortController();
  private backend!: Backend;
  private daemon: DaemonControl | undefined;
  private startedDaemon = false;
  /** Everything deployed during the session (what Ctrl-C stops). */
  private readonly deployed = new Set<string>();
  private readonly streaming = new Set<string>();
  private readonly streams: Promise<void>[] = [];
  private readonly watchers = new Map<string, FSWatcher>();
  private watched = new Set<string>();
  /** Contents (hashes) of the watched files at the last deploy: a save that changed nothing is no reload. */
  private lastDigests = new Map<string, string>();
  private child: ChildProcess | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private pending = false;
  private reloads = 0;
  private stopping: Promise<void> | undefined;
  private colour = 0;
  private width = 0;

  constructor(
    private readonly entry: string,
    private readonly names: string[],
    private readonly opts: DevFlags,
    private readonly config: ResolvedConfig,
    private readonly ctx: CommandContext,
  ) {}

  async run(): Promise<void> {
    const { backendProvider } = await import("../../backends/registry.ts");
    const provider = await backendProvider(this.config);
    if (provider.daemon && !this.config.controlPlane) {
      this.daemon = provider.daemon;
      this.startedDaemon = (await provider.daemon.start(this.config)).started;
    }
    this.backend = await openBackend(this.config);
    const finished = new Promise<void>((resolveFinished) => {
      const onSignal = () => {
        process.off("SIGINT", onSignal);
        process.off("SIGTERM", onSignal);
        // A second Ctrl-C while stopping changes nothing: leaving apps behind would be worse.
        process.on("SIGINT", () => undefined);
        process.on("SIGTERM", () => undefined);
        void this.stop().then(resolveFinished, (e: unknown) => {
          info(color.red(`stopping failed: ${(e as Error)?.message ?? e}`));
          this.ctx.exitCode = 1;
          resolveFinished();
        });
      };
      process.on("SIGINT", onSignal);
      process.on("SIGTERM", onSignal);
    });
    this.trigger();
    await finished;
  }

  private rel(file: string): string {
    return relative(process.cwd(), file) || file;
  }

  /** A save: deploy again after DEBOUNCE_MS of quiet. */
  private schedule(): void {
    if (this.stopping) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.trigger(), DEBOUNCE_MS);
  }

  /** Deploys now, or once the deploy in flight has finished (one at a time). */
  private trigger(): void {
    if (this.stopping) return;
    if (this.running) {
      this.pending = true;
      return;
    }
    this.running = (async () => {
      do {
        this.pending = false;
        await this.reload().catch((e: unknown) =>
          info(color.red(`dev: ${(e as Error)?.message ?? String(e)}`)),
        );
      } while (this.pending && !this.stopping);
    })().finally(() => (this.running = undefined));
  }

  private async reload(): Promise<void> {
    // What the file reaches now (an import may have been added or removed), read before the
    // deploy, so a save while it runs is seen as a change; a file that does not parse keeps
    // the last list, plus the entry.
    const sources = (await sourcesOf(this.entry)) ?? [...this.watched, this.entry];
    if (this.stopping) return;
    this.watch(sources);
    const digests = new Map(sources.map((f) => [f, digest(f)]));
    if (this.reloads > 0) {
      const changed = [...digests].filter(([f, d]) => this.lastDigests.get(f) !== d);
      if (!changed.length) return; // saved without a change
      info(
        color.dim(
          `\n${changed.map(([f]) => this.rel(f)).join(", ")} changed: deploying ${this.rel(this.entry)} again...`,
        ),
      );
    } else {
      info(color.dim(`deploying ${this.rel(this.entry)}...`));
    }
    this.reloads++;
    this.lastDigests = digests;
    const result = await this.deployOnce();
    if (!result) {
      info(
        color.yellow(
          this.deployed.size
            ? "nothing was deployed: what ran before keeps running. Fix the file and save it again"
            : "nothing was deployed: fix the file and save it again",
        ),
      );
      return;
    }
    this.report(result);
    if (this.stopping) return;
    for (const d of result)
      if (d.kind === "app" && (d.status === "ready" || d.status === "unchanged"))
        this.follow(d.name);
    info(color.dim(`watching ${this.watched.size} file(s); Ctrl-C stops everything`));
  }

  /** One `caravan deploy --json` in a child process: its deployments, or undefined when it deployed nothing. */
  private deployOnce(): Promise<DeploymentJSON[] | undefined> {
    const args = [cliEntry(), "deploy", this.entry, ...this.names, "--json"];
    for (const flag of ["project", "domain", "backend", "context"] as const) {
      const value = this.opts[flag];
      if (value !== undefined) args.push(`--${flag}`, value);
    }
    if (this.opts.concurrency) args.push("--concurrency", String(this.opts.concurrency));
    const child = spawn(process.execPath, args, {
      cwd: process.cwd(),
      env: process.env,
      // Its errors (stderr) are the user's to read as they come; its JSON (stdout) is ours.
      stdio: ["ignore", "pipe", "inherit"],
      // Its own process group: a Ctrl-C in the terminal reaches dev, which lets a deploy in
      // flight finish (then stops what it started) rather than leave it half done.
      detached: true,
    });
    this.child = child;
    let stdout = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    return new Promise((resolveDeploy) => {
      child.once("error", (e) => {
        info(color.red(`could not start a deploy: ${e.message}`));
        resolveDeploy(undefined);
      });
      child.once("close", () => {
        this.child = undefined;
        try {
          const doc = JSON.parse(stdout) as { deployments?: DeploymentJSON[] };
          resolveDeploy(doc.deployments);
        } catch {
          resolveDeploy(undefined); // killed, or no JSON: its stderr said why
        }
      });
    });
  }

  private report(deployments: DeploymentJSON[]): void {
    const width = Math.max(...deployments.map((d) => d.name.length));
    for (const d of deployments) {
      if (d.status === "ready" || d.status === "unchanged") this.deployed.add(d.name);
      const name = d.name.padEnd(width);
      const rev = d.revision ? color.dim(` rev ${d.revision}`) : "";
      const where = d.endpoint ? `  ${d.endpoint}` : "";
      if (d.status === "ready")
        info(`${color.green("✓")} ${name}  ${"ready".padEnd(9)}${rev}${where}`);
      else if (d.status === "unchanged")
        info(color.dim(`= ${name}  ${"unchanged".padEnd(9)} rev ${d.revision ?? ""}`) + where);
      else info(`${color.red("✗")} ${name}  ${d.status.padEnd(9)} ${d.error ?? ""}`);
    }
    const failed = deployments.filter((d) => d.status === "failed" || d.status === "skipped");
    if (failed.length && this.deployed.size)
      info(color.yellow("what failed keeps its previous revision (if it had one) serving"));
  }

  /** Watches the directories of `files` (an editor's save may replace a file: a rename). */
  private watch(files: string[]): void {
    this.watched = new Set(files);
    const dirs = new Set(files.map((f) => dirname(f)));
    for (const [dir, w] of this.watchers)
      if (!dirs.has(dir)) {
        w.close();
        this.watchers.delete(dir);
      }
    for (const dir of dirs) {
      if (this.watchers.has(dir)) continue;
      try {
        const w = watch(dir, (_event, name) => {
          if (name && this.watched.has(join(dir, name.toString()))) this.schedule();
        });
        w.on("error", () => undefined);
        this.watchers.set(dir, w);
      } catch {
        /* gone: its files are not watched until it is back in the graph */
      }
    }
  }

  /** Streams an app's log lines, prefixed with its name (once per app for the session). */
  private follow(name: string): void {
    if (this.streaming.has(name)) return;
    this.streaming.add(name);
    const paint = PALETTE[this.colour++ % PALETTE.length]!;
    this.width = Math.max(this.width, name.length);
    this.streams.push(
      (async () => {
        try {
          for await (const line of this.backend.logs(this.config, name, {
            follow: true,
            tail: 20,
            signal: this.abort.signal,
          }))
            process.stdout.write(`${paint(`${name.padEnd(this.width)} |`)} ${line}\n`);
        } catch {
          /* gone (stopped elsewhere) or stopping */
        } finally {
          this.streaming.delete(name);
        }
      })(),
    );
  }

  /** Ctrl-C: no more deploys, the apps stopped (dependents first), the daemon too if ours and idle. */
  private stop(): Promise<void> {
    return (this.stopping ??= (async () => {
      info(color.dim("\nstopping (dependents first)..."));
      clearTimeout(this.timer);
      for (const w of this.watchers.values()) w.close();
      this.watchers.clear();
      // A deploy in flight finishes first: what it started is then known, and stopped.
      if (this.child) info(color.dim("waiting for the deploy in flight to finish..."));
      await this.running;
      this.abort.abort();
      await Promise.all(this.streams);
      try {
        const scope = { project: this.config.project, domain: this.config.domain };
        const status = await this.backend.status(scope);
        const ours = status.filter((s) => this.deployed.has(s.name) && live(s)).map((s) => s.name);
        if (ours.length) {
          for (const name of await this.backend.stop(scope, ours)) info(`stopped ${name}`);
        }
        if (this.daemon && this.startedDaemon) {
          const others = (await this.backend.status()).filter(live);
          if (!others.length) {
            await this.backend.close();
            await this.daemon.stop(this.config, { stopApps: true });
            info(color.dim("stopped the control plane dev started"));
            return;
          }
        }
      } finally {
        await this.backend.close();
      }
    })());
  }
}
