/**
 * The local control plane: keeps environments running as supervised processes on this
 * machine. It implements the backend contract directly (used in-process by `serve`), and
 * the daemon exposes the same object over HTTP. All state that must survive a restart is
 * in the store; `recover()` adopts what still runs and restarts what died.
 */
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  writeFileSync,
  statSync,
  truncateSync,
} from "node:fs";
import { join } from "node:path";
import { CaravanError } from "../../errors.ts";
import type {
  Backend,
  DeployRequest,
  DeployResult,
  Endpoints,
  EnvironmentStatus,
  LogsOptions,
  RunFilter,
  RunRecord,
  RunRequest,
  Scope,
} from "../contract.ts";
import { createHmac, timingSafeEqual } from "node:crypto";
import type { HomePaths } from "./home.ts";
import { logFile } from "./home.ts";
import { endpointsFor, freePort, isAlive } from "./os.ts";
import { SecretStore } from "./secrets.ts";
import { TaskRunner } from "./tasks.ts";
import { API_TOKEN_ENV, API_URL_ENV } from "../../runtime/protocol.ts";
import { Store, type EnvironmentRow, type ProcessRow } from "./store.ts";
import { endpointVar, expandVars } from "../../sdk/vars.ts";
import {
  adopt,
  readRange,
  spawnApp,
  type AppProcess,
  type Launch,
  type LaunchSpec,
} from "./supervisor.ts";

const MAX_LOG_BYTES = 10 * 1024 * 1024;
/** Crash-restart backoff: first retry after 250 ms, doubling, at most 30 s. */
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 30_000;
/** A process that stayed up this long resets the backoff. */
const STABLE_AFTER_MS = 30_000;

/** A prepared process nobody starts (its client went away) is dropped after this long. */
const PREPARED_TTL_MS = 10 * 60_000;

const keyOf = (scope: Scope, name: string) => `${scope.project}/${scope.domain}/${name}`;

export class ControlPlane implements Backend {
  readonly store: Store;
  private readonly procs = new Map<string, { proc: AppProcess; since: number }>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly restartTimers = new Map<string, NodeJS.Timeout>();
  private readonly crashCounts = new Map<string, number>();
  /** Log rotations so far, by log file: a follower that sees the count change reads `.1`. */
  private readonly rotations = new Map<string, number>();
  /** Loaded but not started revisions (two-phase start), by environment key. */
  private readonly prepared = new Map<
    string,
    { revision: string; launch: Launch; go: () => void }
  >();
  /** Port allocation is serialised: two allocations must never pick the same free port. */
  private portLock: Promise<unknown> = Promise.resolve();
  private readonly housekeeping: NodeJS.Timeout;
  private closed = false;
  /** Set when shutdown begins: from then on nothing new is started. */
  private stopping = false;
  private readonly tasks: TaskRunner;
  /** Where code in apps and task workers reaches the run API (set once the API listens). */
  private apiAccess?: { url: string; secret: string };

  constructor(private readonly paths: HomePaths) {
    this.store = new Store(paths.db);
    this.tasks = new TaskRunner(this.store, {
      spawnWorker: (row) => {
        const launch = spawnApp(this.launchSpec(row));
        this.record(row, launch);
        return launch;
      },
      forgetWorker: (proc) => this.closed || this.store.removeProcess(proc.pid, proc.startTime),
    });
    this.housekeeping = setInterval(() => {
      this.rotateLogs();
      this.tasks.reap();
    }, 30_000);
    this.housekeeping.unref();
  }

  /**
   * Tells the control plane where its API listens, so apps and task workers can start runs:
   * they get the URL and a token that only allows runs in their own project/domain.
   */
  setApiAccess(url: string, secret: string): void {
    this.apiAccess = { url, secret };
  }

  /** Adopts processes a previous control plane left running; restarts what died. */
  async recover(): Promise<void> {
    this.tasks.recover();
    // Every process is recorded from the moment it is spawned, so none can be orphaned by a
    // control plane that died mid-start. Adopt what is ready and current; stop the rest.
    const adopted = new Map<string, ProcessRow>();
    for (const p of this.store.allProcesses()) {
      if (!isAlive(p.pid, p.startTime)) {
        this.store.removeProcess(p.pid, p.startTime);
        continue;
      }
      const key = keyOf(p, p.name);
      const row = this.store.get(p, p.name);
      const current =
        row?.kind === "app" &&
        row.desired === "running" &&
        row.state === "ready" &&
        row.revision === p.revision &&
        !adopted.has(key);
      if (current) {
        adopted.set(key, p);
      } else {
        // Half-started, superseded, a prepared revision, or a second copy: never keep it.
        const stray = adopt(p.pid, p.startTime);
        void stray.stop(2000).then(() => this.store.removeProcess(p.pid, p.startTime));
        this.store.event(p, p.name, "stray-stopped", `pid ${p.pid}`);
      }
    }
    for (const row of this.store.list()) {
      if (row.kind !== "app" || row.desired !== "running") continue;
      const key = keyOf(row, row.name);
      const found = adopted.get(key);
      if (found) {
        const proc = adopt(found.pid, found.startTime);
        this.procs.set(key, { proc, since: Date.now() });
        this.watch(row, proc);
        this.store.event(row, row.name, "adopted", `pid ${found.pid}`);
      } else if (row.state !== "failed" && row.state !== "stopped") {
        this.store.event(row, row.name, "lost", "not running after a control plane restart");
        this.scheduleRestart(row, 0);
      }
    }
  }

  async deploy(req: DeployRequest): Promise<DeployResult> {
    const scope = req.scope;
    const key = keyOf(scope, req.name);
    return this.serialized(key, async () => {
      if (this.stopping || this.closed) {
        throw new CaravanError(
          "SERVER_UNREACHABLE",
          `${req.name} was not started: the control plane is shutting down`,
        );
      }
      const row = this.store.get(scope, req.name);
      const running = req.kind === "task" ? this.tasks.has(key) : this.procs.has(key);
      if (
        row &&
        row.revision === req.revision &&
        !req.force &&
        row.desired === "running" &&
        row.state === "ready" &&
        running
      ) {
        this.store.event(scope, req.name, "unchanged", req.revision);
        return {
          status: "unchanged",
          revision: req.revision,
          ...(row.port ? endpointsFor(row.port) : {}),
        };
      }
      const port = req.kind === "app" ? await this.portFor(scope, req.name) : null;
      const next = rowOf(req, port, row && row.revision === req.revision ? row.restarts : 0);
      this.cancelRestart(key);
      this.store.upsert(next);
      this.store.addRevision(scope, req.name, req.revision, req.spec, req.code.hash);
      this.store.event(scope, req.name, "deploy", req.revision);
      if (req.kind === "task") {
        // Ready once a worker of this revision has loaded it: its tasks are registered.
        try {
          await this.tasks.register(next);
        } catch (e) {
          this.store.setState(scope, req.name, "failed", (e as Error).message);
          this.store.event(scope, req.name, "failed", (e as Error).message);
          throw e;
        }
        this.store.setState(scope, req.name, "ready");
        return { status: "ready", revision: req.revision };
      }
      await this.stopProcess(key);
      try {
        await this.startProcess(next);
      } catch (e) {
        this.store.setState(scope, req.name, "failed", (e as Error).message);
        this.store.event(scope, req.name, "failed", (e as Error).message);
        throw e;
      }
      this.store.setState(scope, req.name, "ready");
      return { status: "ready", revision: req.revision, ...endpointsFor(port!) };
    });
  }

  async reserve(scope: Scope, names: string[]): Promise<Record<string, Endpoints>> {
    const out: Record<string, Endpoints> = {};
    for (const name of names) out[name] = endpointsFor(await this.portFor(scope, name));
    return out;
  }

  /** Spawns a JS app's new revision; it loads now and starts when `deploy` says so. */
  async prepare(req: DeployRequest): Promise<void> {
    if (req.kind !== "app" || req.spec.serveKind === "command") return; // a command starts as it spawns
    const key = keyOf(req.scope, req.name);
    await this.serialized(key, async () => {
      if (this.stopping || this.closed) return;
      const row = this.store.get(req.scope, req.name);
      const unchanged =
        row?.revision === req.revision && row.state === "ready" && this.procs.has(key);
      if ((unchanged && !req.force) || this.prepared.get(key)?.revision === req.revision) return;
      this.discardPrepared(key);
      const port = await this.portFor(req.scope, req.name);
      let go!: () => void;
      const gate = new Promise<void>((resolve) => (go = resolve));
      const row0 = rowOf(req, port, 0);
      const launch = spawnApp(this.launchSpec(row0), gate);
      this.record(row0, launch);
      this.prepared.set(key, { revision: req.revision, launch, go });
      setTimeout(() => {
        if (this.prepared.get(key)?.launch === launch) this.discardPrepared(key);
      }, PREPARED_TTL_MS).unref();
    });
  }

  async discard(scope: Scope, name: string): Promise<void> {
    const key = keyOf(scope, name);
    await this.serialized(key, async () => {
      await this.discardPrepared(key);
      // Never deployed (skipped on its first deploy): its reserved port goes back too.
      if (!this.closed && !this.store.get(scope, name)) this.store.releasePort(scope, name);
    });
  }

  async startRun(req: RunRequest, opts: { waitMs?: number } = {}): Promise<RunRecord> {
    if (this.stopping || this.closed) {
      throw new CaravanError(
        "SERVER_UNREACHABLE",
        `${req.task} was not run: the control plane is shutting down`,
      );
    }
    const run = this.tasks.start(req);
    return opts.waitMs ? this.tasks.wait(run.id, opts.waitMs) : run;
  }

  getRun(id: string, opts: { waitMs?: number } = {}): Promise<RunRecord> {
    return this.tasks.wait(id, opts.waitMs ?? 0);
  }

  async listRuns(scope: Scope | undefined, filter: RunFilter = {}): Promise<RunRecord[]> {
    return this.store.listRuns(scope, filter);
  }

  /** The token a process in `scope` uses for the run API: good for that scope's runs only. */
  runToken(scope: Scope): string | undefined {
    return this.apiAccess && scopedRunToken(this.apiAccess.secret, scope);
  }

  async status(scope?: Scope): Promise<EnvironmentStatus[]> {
    return this.store.list(scope).map((row) => {
      const key = keyOf(row, row.name);
      const current = this.procs.get(key);
      const pids = row.kind === "task" ? this.tasks.pids(key) : current ? [current.proc.pid] : [];
      return this.store.toStatus(row, pids);
    });
  }

  stop(scope: Scope, names: string[], opts: { cascade?: boolean } = {}): Promise<string[]> {
    return this.takeDown(scope, names, opts, false);
  }

  delete(scope: Scope, names: string[], opts: { cascade?: boolean } = {}): Promise<string[]> {
    return this.takeDown(scope, names, opts, true);
  }

  async *logs(scope: Scope, name: string, opts: LogsOptions = {}): AsyncIterable<string> {
    if (!this.store.get(scope, name)) throw notDeployed(scope, [name], this.store.list(scope));
    const file = logFile(this.paths, scope.project, scope.domain, name);
    let offset = 0;
    if (existsSync(file)) {
      const size = statSync(file).size;
      const start = Math.max(0, size - 4 * 1024 * 1024);
      const lines = readRange(file, start, size).split("\n");
      if (start > 0) lines.shift(); // began mid-line
      if (lines.at(-1) === "") lines.pop();
      const tail = opts.tail === undefined ? lines : lines.slice(-opts.tail);
      for (const line of tail) yield line;
      offset = size;
    }
    let partial = "";
    let rotations = this.rotations.get(file) ?? 0;
    while (opts.follow && !opts.signal?.aborted) {
      await new Promise((r) => setTimeout(r, 200));
      if (!existsSync(file)) continue;
      let rotated = "";
      if ((this.rotations.get(file) ?? 0) !== rotations) {
        // Copy-truncated since the last poll: the rest of what we had not read is in `.1`.
        rotations = this.rotations.get(file) ?? 0;
        try {
          rotated = readRange(`${file}.1`, offset, statSync(`${file}.1`).size);
        } catch {
          /* rotated again meanwhile: that part is gone */
        }
        offset = 0;
      }
      const size = statSync(file).size;
      if (size < offset) offset = 0;
      if (size === offset && !rotated) continue;
      const chunk = partial + rotated + readRange(file, offset, size);
      offset = size;
      const lines = chunk.split("\n");
      partial = lines.pop() ?? "";
      for (const line of lines) yield line;
    }
  }

  /** Stops every app (dependents first) when `stopApps`; always releases the store. */
  async shutdown(opts: { stopApps: boolean }): Promise<void> {
    this.stopping = true;
    if (opts.stopApps) {
      const rows = this.store.list().filter((r) => r.desired === "running");
      const byScope = new Map<string, EnvironmentRow[]>();
      for (const r of rows)
        byScope.set(`${r.project}/${r.domain}`, [
          ...(byScope.get(`${r.project}/${r.domain}`) ?? []),
          r,
        ]);
      for (const scoped of byScope.values()) {
        await this.takeDown(
          scoped[0]!,
          scoped.map((r) => r.name),
          { cascade: true },
          false,
        );
      }
    }
    await this.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.housekeeping);
    for (const t of this.restartTimers.values()) clearTimeout(t);
    await this.tasks.close();
    // Wait for prepared processes to be gone: whoever closes us may exit right after.
    const discarding = [...this.prepared.keys()].map((key) => this.discardPrepared(key));
    await Promise.allSettled([...this.locks.values(), ...discarding]);
    this.store.close();
  }

  // --- internals ---

  private async takeDown(
    scope: Scope,
    names: string[],
    opts: { cascade?: boolean },
    forget: boolean,
  ): Promise<string[]> {
    const rows = this.store.list(scope);
    const byName = new Map(rows.map((r) => [r.name, r]));
    const missing = names.filter((n) => !byName.has(n));
    if (missing.length) throw notDeployed(scope, missing, rows);
    // Every running dependent, direct or transitive: with --cascade they go too; without,
    // they are all named (stopping just the direct ones would be refused again).
    const targets = new Set(names);
    const blocking: string[] = [];
    for (let grew = true; grew;) {
      grew = false;
      for (const r of rows) {
        if (targets.has(r.name) || r.desired !== "running") continue;
        const deps = (r.request.spec.dependsOn as string[] | undefined) ?? [];
        if (!deps.some((d) => targets.has(d))) continue;
        targets.add(r.name);
        blocking.push(r.name);
        grew = true;
      }
    }
    if (blocking.length && !opts.cascade) {
      const verb = forget ? "delete" : "stop";
      throw new CaravanError(
        "DEPENDENTS_EXIST",
        `cannot ${verb} ${names.join(", ")}: ${blocking.join(", ")} depend${blocking.length === 1 ? "s" : ""} on it and ${blocking.length === 1 ? "is" : "are"} running. ${verb[0]!.toUpperCase()}${verb.slice(1)} ${blocking.length === 1 ? "it" : "them"} too, or pass --cascade`,
        { dependents: blocking },
      );
    }
    const order = dependentsFirst([...targets], byName);
    for (const name of order) {
      const key = keyOf(scope, name);
      await this.serialized(key, async () => {
        this.cancelRestart(key);
        this.store.setDesired(scope, name, "stopped");
        await this.stopProcess(key);
        await this.tasks.unregister(scope, name);
        if (forget) {
          await this.discardPrepared(key);
          this.store.remove(scope, name);
          this.store.releasePort(scope, name);
        } else this.store.setState(scope, name, "stopped");
        this.store.event(scope, name, forget ? "deleted" : "stopped");
      });
    }
    return order;
  }

  /** Starts the row's revision: the prepared process if there is one, else a new one. */
  private async startProcess(row: EnvironmentRow): Promise<void> {
    const key = keyOf(row, row.name);
    const prepared = this.prepared.get(key);
    this.prepared.delete(key);
    let launch: Launch;
    if (prepared?.revision === row.revision) {
      launch = prepared.launch;
      prepared.go();
    } else {
      if (prepared) this.stopLaunch(prepared.launch);
      launch = spawnApp(this.launchSpec(row));
      this.record(row, launch);
    }
    const proc = await launch.ready;
    this.procs.set(key, { proc, since: Date.now() });
    this.watch(row, proc);
  }

  private watch(row: EnvironmentRow, proc: AppProcess): void {
    const key = keyOf(row, row.name);
    void proc.exited.then((info) => {
      if (this.closed) return;
      // The app ran in its own process group: children it left (a shell wrapper's server)
      // would keep its port and make every restart fail. The group only: the pid is dead.
      if (!proc.isStopping) killGroup(proc.pid);
      this.store.removeProcess(proc.pid, proc.startTime);
      const current = this.procs.get(key);
      if (current?.proc !== proc) return;
      this.procs.delete(key);
      if (proc.isStopping) return;
      const latest = this.store.get(row, row.name);
      if (!latest || latest.desired !== "running") return;
      const how = info.signal
        ? `was killed by ${info.signal}`
        : info.code === null
          ? "exited"
          : `exited with code ${info.code}`;
      if (Date.now() - current.since > STABLE_AFTER_MS) this.crashCounts.delete(key);
      this.store.bumpRestarts(row, row.name);
      this.store.event(row, row.name, "crashed", how);
      this.scheduleRestart(latest, undefined, `${row.name} ${how}`);
    });
  }

  private scheduleRestart(row: EnvironmentRow, delayMs?: number, why?: string): void {
    if (this.closed || this.stopping) return;
    const key = keyOf(row, row.name);
    const attempt = this.crashCounts.get(key) ?? 0;
    this.crashCounts.set(key, attempt + 1);
    const delay = delayMs ?? Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
    this.store.setState(
      row,
      row.name,
      "restarting",
      why ? `${why}; restarting in ${delay} ms` : null,
    );
    this.cancelRestart(key);
    const timer = setTimeout(() => {
      this.restartTimers.delete(key);
      void this.serialized(key, async () => {
        if (this.closed || this.stopping) return;
        const latest = this.store.get(row, row.name);
        if (!latest || latest.desired !== "running" || this.procs.has(key)) return;
        try {
          await this.startProcess(latest);
          this.store.setState(row, row.name, "ready");
          this.store.event(row, row.name, "restarted");
        } catch (e) {
          this.store.event(row, row.name, "restart-failed", (e as Error).message);
          this.scheduleRestart(latest, undefined, (e as Error).message.split("\n")[0]);
        }
      });
    }, delay);
    timer.unref();
    this.restartTimers.set(key, timer);
  }

  private discardPrepared(key: string): Promise<void> {
    const prepared = this.prepared.get(key);
    this.prepared.delete(key);
    return prepared ? this.stopLaunch(prepared.launch) : Promise.resolve();
  }

  /** Records a spawned process at once; forgets it when it exits before it was ready. */
  private record(row: EnvironmentRow, launch: Launch): void {
    const proc = launch.proc;
    if (!proc) return;
    this.store.addProcess({
      pid: proc.pid,
      startTime: proc.startTime,
      project: row.project,
      domain: row.domain,
      name: row.name,
      revision: row.revision,
    });
    launch.ready.catch(() => this.closed || this.store.removeProcess(proc.pid, proc.startTime));
  }

  private async stopLaunch(launch: Launch): Promise<void> {
    const proc = launch.proc;
    if (!proc) return;
    await proc.stop(2000);
    if (!this.closed) this.store.removeProcess(proc.pid, proc.startTime);
  }

  /** The app's port: allocated once, kept across redeploys and restarts until delete. */
  private portFor(scope: Scope, name: string): Promise<number> {
    const run = this.portLock.then(async () => {
      const existing = this.store.portOf(scope, name);
      if (existing !== undefined) return existing;
      const port = await freePort(this.store.usedPorts());
      this.store.assignPort(scope, name, port);
      return port;
    });
    this.portLock = run.catch(() => {});
    return run;
  }

  private cancelRestart(key: string): void {
    const t = this.restartTimers.get(key);
    if (t) clearTimeout(t);
    this.restartTimers.delete(key);
  }

  private async stopProcess(key: string): Promise<void> {
    const current = this.procs.get(key);
    if (!current) return;
    await current.proc.stop();
    this.procs.delete(key);
  }

  private launchSpec(row: EnvironmentRow): LaunchSpec {
    const req = row.request;
    const spec = req.spec;
    const port = row.port ?? 0; // task workers listen on nothing
    const env: Record<string, string> = { ...(spec.envVars as Record<string, string>) };
    for (const input of (spec.inputs as { name: string; envVar: string }[]) ?? []) {
      const value = req.inputs[input.name];
      if (value !== undefined) env[input.envVar] = value;
    }
    for (const [dep, ep] of Object.entries(req.dependencies)) {
      env[endpointVar(dep)] = ep.internalEndpoint;
    }
    Object.assign(env, {
      CARAVAN_APP_NAME: row.name,
      CARAVAN_PROJECT: row.project,
      CARAVAN_DOMAIN: row.domain,
      CARAVAN_INPUTS_FILE: this.writeInputsFile(row),
    });
    if (this.apiAccess) {
      env[API_URL_ENV] = this.apiAccess.url;
      env[API_TOKEN_ENV] = scopedRunToken(this.apiAccess.secret, row);
    }
    // Expansion in arguments sees everything but secrets (an argv is visible to every user).
    const vars: Record<string, string> = { ...env, PORT: String(port), NAME: row.name };
    // Secret values are read from the store at launch: never from the request or the store DB.
    const secrets = (spec.secrets as { key: string; envVar: string }[] | undefined) ?? [];
    if (secrets.length) {
      const values = new SecretStore(this.paths.secrets).resolve(
        row,
        secrets.map((s) => s.key),
        row.name,
      );
      for (const s of secrets) env[s.envVar] = values[s.key]!;
    }
    const base = {
      name: row.name,
      port,
      logFile: logFile(this.paths, row.project, row.domain, row.name),
      startTimeoutMs: ((spec.timeouts as { start?: number })?.start ?? 60) * 1000,
      env,
    };
    if (spec.serveKind === "command") {
      const argv = [...(spec.command as string[]), ...(spec.args as string[])].map((a) =>
        expandVars(a, vars, row.name),
      );
      return {
        ...base,
        mode: {
          kind: "command",
          argv,
          // With `include`, the command runs in its file snapshot.
          cwd:
            req.files && (spec.include as string[] | undefined)?.length
              ? req.files.dir
              : req.code.sourceRoot,
          ...(spec.readiness?.path ? { readinessPath: spec.readiness.path } : {}),
        },
      };
    }
    return {
      ...base,
      mode: {
        kind: "runtime",
        runtimeMain: req.code.runtime,
        config: {
          kind: row.kind,
          name: row.name,
          project: row.project,
          domain: row.domain,
          entry: req.code.entry,
          sourceRoot: req.code.sourceRoot,
          port,
          host: "127.0.0.1",
          endpoints: Object.fromEntries(
            Object.entries(req.dependencies).map(([n, e]) => [n, e.internalEndpoint]),
          ),
          publicEndpoints: Object.fromEntries(
            Object.entries(req.dependencies).map(([n, e]) => [n, e.endpoint]),
          ),
          inputs: req.inputs,
        },
      },
    };
  }

  /**
   * `$CARAVAN_INPUTS_FILE`: every input and dependency endpoint as JSON, for programs that
   * prefer a file to environment variables. One file per revision; no secrets in it.
   */
  private writeInputsFile(row: EnvironmentRow): string {
    const dir = join(this.paths.inputFiles, row.project, row.domain);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${row.name}-${row.revision}.json`);
    const req = row.request;
    const envVars = Object.fromEntries(
      ((req.spec.inputs as { name: string; envVar: string }[]) ?? []).map((i) => [
        i.name,
        i.envVar,
      ]),
    );
    const doc = {
      app: row.name,
      project: row.project,
      domain: row.domain,
      inputs: req.inputs,
      inputEnvVars: envVars,
      endpoints: req.dependencies,
    };
    writeFileSync(file, JSON.stringify(doc, null, 2) + "\n");
    return file;
  }

  private rotateLogs(): void {
    for (const row of this.store.list()) {
      const file = logFile(this.paths, row.project, row.domain, row.name);
      try {
        if (statSync(file).size > MAX_LOG_BYTES) {
          // copy-truncate: the app keeps its O_APPEND descriptor and writes on at the new end.
          copyFileSync(file, `${file}.1`);
          truncateSync(file, 0);
          this.rotations.set(file, (this.rotations.get(file) ?? 0) + 1);
        }
      } catch {
        /* no log yet */
      }
    }
  }

  /** Runs `fn` after every earlier operation on the same environment. */
  private serialized<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.locks.get(key) ?? Promise.resolve();
    const run = prev.then(fn, fn);
    const settled = run.catch(() => {});
    this.locks.set(key, settled);
    void settled.then(() => {
      if (this.locks.get(key) === settled) this.locks.delete(key);
    });
    return run;
  }
}

function rowOf(req: DeployRequest, port: number | null, restarts: number): EnvironmentRow {
  return {
    project: req.scope.project,
    domain: req.scope.domain,
    name: req.name,
    kind: req.kind,
    revision: req.revision,
    request: { ...req, force: false },
    port,
    state: "starting",
    desired: "running",
    restarts,
    error: null,
    updatedAt: new Date().toISOString(),
  };
}

/**
 * The token apps and task workers use for the run API: their scope, and an HMAC of it under
 * the control plane's own token. It allows runs in that scope only; no table to keep.
 */
export function scopedRunToken(secret: string, scope: Scope): string {
  const body = Buffer.from(JSON.stringify([scope.project, scope.domain])).toString("base64url");
  return `run_${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** The scope a run token is good for, or undefined when it is not one of ours. */
export function runTokenScope(secret: string, token: string): Scope | undefined {
  const m = /^run_([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(token);
  if (!m) return undefined;
  const expected = createHmac("sha256", secret).update(m[1]!).digest();
  const given = Buffer.from(m[2]!, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  const [project, domain] = JSON.parse(Buffer.from(m[1]!, "base64url").toString()) as string[];
  return { project: project!, domain: domain! };
}

function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, "SIGKILL");
  } catch {
    /* the group is empty */
  }
}

function dependentsFirst(names: string[], byName: Map<string, EnvironmentRow>): string[] {
  const set = new Set(names);
  const order: string[] = [];
  const visited = new Set<string>();
  // Post-order over dependencies gives dependencies first; reversed, dependents first.
  const visit = (n: string) => {
    if (visited.has(n)) return;
    visited.add(n);
    for (const d of ((byName.get(n)?.request.spec.dependsOn as string[]) ?? [])
      .filter((d) => set.has(d))
      .sort())
      visit(d);
    order.push(n);
  };
  for (const n of [...names].sort()) visit(n);
  return order.reverse();
}

function notDeployed(scope: Scope, names: string[], rows: EnvironmentRow[]): CaravanError {
  const known = rows.map((r) => r.name);
  return new CaravanError(
    "NOT_DEPLOYED",
    `${names.map((n) => `"${n}"`).join(", ")} ${names.length === 1 ? "is" : "are"} not deployed in ${scope.project}/${scope.domain}; ${known.length ? `deployed: ${known.join(", ")}` : "nothing is deployed there"} (see caravan status --all)`,
    { names },
  );
}
