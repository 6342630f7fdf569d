/**
 * The local control plane: keeps environments running as supervised processes on this
 * machine. It implements the backend contract directly (used in-process by `serve`), and
 * the daemon exposes the same object over HTTP. All state that must survive a restart is
 * in the store; `recover()` adopts what still runs and restarts what died.
 */
import { join } from "node:path";
import { CaravanError, headline } from "../../errors.ts";
import type { EnvironmentDescription } from "../wire.ts";
import type {
  Backend,
  DeployRequest,
  DeployResult,
  Endpoints,
  EnvironmentStatus,
  LogsOptions,
  RunFilter,
  RunRecord,
  RunPrune,
  RunRequest,
  Scope,
  TokenAccess,
  TraceAccess,
} from "../contract.ts";
import type { HomePaths } from "./home.ts";
import { logFile } from "./home.ts";
import { endpointsFor, listenersBeyondLoopback } from "./os.ts";
import { PortAllocator } from "./ports.ts";
import { ServingApp, type Replica } from "./serving-app.ts";
import { Launcher, type ApiAccess } from "./launcher.ts";
import { LOGIN_PATH, type RouteOptions } from "../gateway/index.ts";
import { GatewayProcess } from "./gateway-process/client.ts";
import {
  refuseFixedPort,
  refuseGoneDependencies,
  refuseNewDependents,
  refuseTakeover,
  takenFrom,
} from "./admission.ts";
import { Autoscaler } from "./autoscaler.ts";
import { Replicas } from "./replicas.ts";
import { stopOrphans, stopRecorded, survivingReplicas } from "./recovery.ts";
import { notDeployed, teardownOrder } from "../teardown.ts";
import { TokenStore, isSessionValue } from "./tokens.ts";
import { TaskRunner } from "./tasks.ts";
import { LogKeeper, readLog } from "./logs.ts";
import { JobRunner } from "./jobs.ts";
import { dependencyHealth, type Health } from "../health.ts";
import { Store, keyOf, type AppPorts, type EnvironmentRow, type EventRecord } from "./store.ts";
import { adopt, type ExitInfo } from "./supervisor.ts";
import { StartQueue, type StartStats } from "./start-queue.ts";
import { TelemetryReceiver } from "./telemetry/receiver.ts";
import { TelemetryStore, telemetryRetentionFrom } from "./telemetry/store.ts";
import { WarmPool, type WarmPoolStats } from "./warm-pool.ts";

export { runTokenScope, scopedRunToken } from "./launcher.ts";

/** How long a deploy waits for the old replicas to drain and stop before it returns. */
const RETIRE_WAIT_MS = 5_000;
/** How often dependency health is checked for events (status derives it on every call). */
const HEALTH_EVERY_MS = 1_000;

/** Whom console sessions are for: not a DNS-1123 name, so no app's session can be one. */
const CONSOLE_SESSION_APP = "@console";
/** Where the console's login link points, on the API's own address. */
export const CONSOLE_LOGIN_PATH = "/console/login";

export class ControlPlane implements Backend {
  readonly store: Store;
  /** API tokens, login codes and sessions (hashes, in the store's database). */
  private readonly tokenStore: TokenStore;
  /** The tokens capability of the contract, over `tokenStore`. */
  readonly tokens: TokenAccess;
  /**
   * Listens on every app's endpoints and forwards to its replicas: a process of its own,
   * which serves on while no control plane runs (see gateway-process/).
   */
  readonly gateway: GatewayProcess;
  /** What apps report over OTLP (and the spans caravan records itself, e.g. task runs). */
  readonly telemetry: TelemetryReceiver;
  /** The traces capability of the contract, over `telemetry`. */
  readonly traces: TraceAccess;
  /**
   * Each app whose endpoints are open, by environment key: its revision, replicas and
   * restart and scaling history, in one record a deploy replaces (see serving-app.ts).
   */
  private readonly serving = new Map<string, ServingApp>();
  private readonly locks = new Map<string, Promise<unknown>>();
  /** Keeps every app's log under its cap as it is written (see logs.ts). */
  private readonly logKeeper = new LogKeeper();
  /** Bounds the replicas starting at once (see start-queue.ts). */
  private readonly startQueue = new StartQueue();
  /** Warm runtime processes JS apps and task workers start in (see warm-pool.ts). */
  private readonly warmPool: WarmPool;
  private readonly housekeeping: NodeJS.Timeout;
  /** Adds and retires replicas as the load on each app needs (see autoscaler.ts). */
  private readonly autoscaler: Autoscaler;
  /** Records when an environment becomes degraded or healthy again (its dependencies). */
  private readonly healthWatch: NodeJS.Timeout;
  /** Each environment's health as last recorded (seeded from the events of an earlier daemon). */
  private health = new Map<string, Health>();
  private closed = false;
  /** Set when shutdown begins: from then on nothing new is started. */
  private stopping = false;
  private readonly tasks: TaskRunner;
  private readonly jobs: JobRunner;
  /** App and replica ports (see ports.ts). */
  private readonly ports: PortAllocator;
  /** Where code in apps and task workers reaches the run API (set once the API listens). */
  private apiAccess?: ApiAccess;
  /** Spawns and records processes of environments (see launcher.ts). */
  private readonly launcher: Launcher;
  /** Starts, watches, retires and stops apps' replicas (see replicas.ts). */
  private readonly replicas: Replicas;

  constructor(private readonly paths: HomePaths) {
    this.store = new Store(paths.db);
    this.ports = new PortAllocator(this.store);
    const telemetry = (this.telemetry = new TelemetryReceiver(
      new TelemetryStore(paths.telemetry, telemetryRetentionFrom(process.env)),
    ));
    this.traces = {
      list: async (filter) => ({
        traces: telemetry.listTraces(filter),
        telemetry: telemetry.stats(),
      }),
      get: async (traceId) => ({
        traceId,
        spans: telemetry.trace(traceId),
        logs: telemetry.logsOfTrace(traceId),
      }),
    };
    this.warmPool = new WarmPool({
      dir: join(paths.home, "warm"),
      logFile: join(paths.logs, "warm-pool.log"),
      // Refilling waits while apps start: on a small machine it would slow them down.
      quiet: () => {
        const starts = this.startQueue.stats();
        return starts.active === 0 && starts.waiting === 0 && !this.stopping;
      },
    });
    this.launcher = new Launcher({
      paths,
      store: this.store,
      warmPool: this.warmPool,
      logKeeper: this.logKeeper,
      apiAccess: () => this.apiAccess,
      closed: () => this.closed,
    });
    const tokens = (this.tokenStore = new TokenStore(this.store.database));
    this.tokens = {
      create: async (name) => tokens.create(name),
      list: async () => tokens.list(),
      revoke: async (idOrName) => {
        if (!tokens.revoke(idOrName))
          throw new CaravanError(
            "NOT_FOUND",
            `no live token "${idOrName}" (caravan token list shows them)`,
          );
        // Refused from now on, not only once the gateway's 1 s cache has run out.
        await this.gateway.tokensChanged();
      },
      link: async (scope, app) => this.loginLink(scope, app),
      consoleLink: async () => this.consoleSessions.link(),
    };
    // Tokens, sessions and login links: the gateway checks them in the database itself.
    this.gateway = new GatewayProcess(paths, this.store, {
      wake: (key) => this.wake(key),
      log: (line) => process.stderr.write(`${line}\n`),
      // The gateway's span of a request: under the app's name, in its project/domain.
      recordSpan: (key, span) => {
        const row = this.serving.get(key)?.row;
        if (row)
          this.telemetry.recordSpan({
            ...span,
            service: row.name,
            project: row.project,
            domain: row.domain,
          });
      },
    });
    this.replicas = new Replicas({
      store: this.store,
      gateway: this.gateway,
      launcher: this.launcher,
      ports: this.ports,
      startQueue: this.startQueue,
      accepting: () => !this.stopping && !this.closed,
      closed: () => this.closed,
      crashed: (app, replica, info) => this.restartCrashed(app, replica, info),
    });
    this.tasks = new TaskRunner(this.store, {
      spawnWorker: (row) => this.launcher.start(row, 0),
      forgetWorker: (proc) => this.closed || this.store.removeProcess(proc.pid, proc.startTime),
      recordSpan: (span) => this.telemetry.recordSpan(span),
    });
    this.jobs = new JobRunner({
      store: this.store,
      launchSpec: (row) => this.launcher.spec(row, 0),
      accepting: () => !this.stopping && !this.closed,
    });
    this.housekeeping = setInterval(() => {
      this.sweepLogs();
      this.tasks.reap();
    }, 30_000);
    this.housekeeping.unref();
    this.autoscaler = new Autoscaler({
      serving: this.serving,
      accepting: () => !this.closed && !this.stopping,
      busy: (key) => this.locks.has(key),
      load: (key) => this.gateway.load(key),
      serialized: (key, fn) => this.serialized(key, fn),
      addReplicas: (app, n) => this.replicas.grow(app, n),
      retire: (app, replica) => void this.replicas.retire(app, replica),
      event: (app, type, message) => this.store.event(app.row, app.row.name, type, message),
    });
    this.health = this.store.lastHealth();
    this.healthWatch = setInterval(() => this.recordHealth(), HEALTH_EVERY_MS);
    this.healthWatch.unref();
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
    // The pool warms for what was deployed last, before the next deploy asks.
    for (const row of this.store.list()) this.warmPool.note(row.request);
    this.tasks.recover();
    this.jobs.recover();
    // The gateway a previous control plane left keeps serving; it is told everything again.
    await this.gateway.adopt().catch((e: Error) => {
      process.stderr.write(`adopting the gateway: ${e.message}\n`);
    });
    await stopOrphans(this.store);
    const adopted = await survivingReplicas(this.store, () => this.closed);
    for (const row of this.store.list()) {
      if (row.kind === "task" && row.desired === "running" && row.state === "ready") {
        // Workers died with the previous control plane: one starts now, so runs are warm.
        void this.serialized(keyOf(row, row.name), async () => {
          const latest = this.store.get(row, row.name);
          if (
            this.closed ||
            latest?.revision !== row.revision ||
            this.tasks.has(keyOf(row, row.name))
          )
            return; // a deploy got there first
          await this.tasks.register(row).catch((e: Error) => {
            if (this.closed) return;
            this.store.event(row, row.name, "failed", e.message);
            this.store.setState(row, row.name, "failed", e.message);
          });
        });
        continue;
      }
      if (row.kind !== "app" || row.desired !== "running" || !row.ports) continue;
      if (row.state === "failed") continue; // never served: nothing to open
      const key = keyOf(row, row.name);
      try {
        await this.openEndpoints(row, true);
      } catch (e) {
        this.store.setState(row, row.name, "failed", (e as Error).message);
        // Unreachable and untracked otherwise: its processes go.
        for (const p of adopted.get(key) ?? []) stopRecorded(this.store, p, () => this.closed);
        continue;
      }
      const app = new ServingApp(key, row);
      this.serving.set(key, app);
      const found = adopted.get(key) ?? [];
      for (const p of found) {
        const replica: Replica = {
          id: `pid-${p.pid}`,
          proc: adopt(p.pid, p.startTime),
          port: p.port,
          since: Date.now(),
        };
        this.replicas.add(app, replica);
        this.store.event(row, row.name, "adopted", `pid ${p.pid}`);
      }
      app.target = found.length;
      if (found.length === 0 && (minReplicas(row) > 0 || row.state !== "ready")) {
        app.target = Math.max(1, minReplicas(row));
        this.store.event(row, row.name, "lost", "not running after a control plane restart");
        this.scheduleRestart(app, 0);
      } else {
        this.store.setState(row, row.name, "ready");
      }
    }
    // What was re-opened above is all there is: the gateway closes anything else.
    await this.gateway.reconcile();
  }

  async deploy(req: DeployRequest): Promise<DeployResult> {
    refuseFixedPort(req);
    // The project's own telemetry limits (or, without any, the home's), even when unchanged.
    this.telemetry.setRetention(req.scope, req.telemetry);
    const scope = req.scope;
    const key = keyOf(scope, req.name);
    this.warmPool.note(req);
    return this.serialized(key, async () => {
      if (this.stopping || this.closed) {
        throw new CaravanError(
          "SERVER_UNREACHABLE",
          `${req.name} was not started: the control plane is shutting down`,
        );
      }
      const row = this.store.get(scope, req.name);
      refuseTakeover(req, row);
      // A job has nothing running: its last success of this revision counts.
      const running =
        req.kind === "task"
          ? this.tasks.has(key)
          : req.kind === "job"
            ? true
            : this.serving.has(key);
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
          ...(row.ports ? endpointsFor(row.ports) : {}),
        };
      }
      const ports = req.kind === "app" ? await this.ports.appPorts(scope, req.name) : null;
      // Checked after the last wait, with nothing awaited until this one is recorded as
      // running: a stop or delete of a dependency either came first (refused here) or sees
      // this dependent running (and refuses, see takeDown). Never a dependent left running
      // against a dependency that is gone.
      refuseGoneDependencies(this.store, req);
      const next = rowOf(req, ports, row && row.revision === req.revision ? row.restarts : 0);
      this.serving.get(key)?.cancelRestart();
      this.store.addRevision(scope, req.name, req.revision, req.spec, req.code.hash);
      this.store.event(scope, req.name, "deploy", req.revision);
      if (req.kind === "job") return this.jobs.run(next);
      if (req.kind === "task") {
        // A new revision loads beside the running one, which takes runs until it is ready.
        const replacing = row?.desired === "running" && this.tasks.has(key);
        if (!replacing) this.store.upsert(next);
        try {
          // Ready once a worker of this revision has loaded it: its tasks are registered.
          await this.tasks.register(next, { force: req.force ?? false });
        } catch (e) {
          const message = (e as Error).message;
          this.store.event(scope, req.name, "failed", message);
          if (replacing)
            this.store.setState(
              scope,
              req.name,
              row!.state,
              `revision ${req.revision} failed to load; runs still use ${row!.revision}: ${message}`,
            );
          else this.store.setState(scope, req.name, "failed", message);
          throw e;
        }
        this.store.upsert({ ...next, state: "ready" });
        return { status: "ready", revision: req.revision };
      }
      // A running app is replaced without dropping a request: the new revision starts beside
      // the old one and must be ready before traffic moves; then the old one drains and stops.
      const before = this.serving.get(key);
      const old = [...(before?.replicas ?? [])];
      const replacing = row?.desired === "running" && before !== undefined;
      if (!replacing) this.store.upsert(next);
      let fresh: Replica[];
      try {
        await this.openEndpoints(next);
        // As many as serve now (the load they carry moves over), at least min and one.
        const [min, max] = replicaBounds(next);
        fresh = await this.replicas.start(
          next,
          Math.min(Math.max(1, max), Math.max(1, min, old.length)),
        );
      } catch (e) {
        const message = (e as Error).message;
        this.store.event(scope, req.name, "failed", message);
        if (replacing) {
          // The old revision keeps serving, as it was.
          this.store.setState(
            scope,
            req.name,
            row!.state,
            `revision ${req.revision} failed to start; still serving ${row!.revision}: ${message}`,
          );
          this.gateway.setOptions(key, routeOf(row!));
          // Its restart was cancelled for this deploy: it still needs one if nothing serves.
          if (!before!.replicas.length && row!.state === "restarting")
            this.scheduleRestart(before!);
        } else {
          this.store.setState(scope, req.name, "failed", message);
          await this.gateway.close(key);
        }
        throw e;
      }
      // The new replicas take requests now, in a record of their own: the crash count, scaling
      // history and pending restart of what they replace end here. The old ones drain.
      before?.cancelRestart();
      const app = ServingApp.deployed(key, next, before);
      this.serving.set(key, app);
      for (const replica of fresh) this.replicas.add(app, replica);
      this.store.upsert({ ...next, state: "ready" });
      this.gateway.setOptions(key, routeOf(next));
      app.target = fresh.length;
      app.lastScaleAt = Date.now();
      const retiring = Promise.all(old.map((r) => this.replicas.retire(before!, r)));
      // Short requests finish within the wait; long ones (a stream, a WebSocket) keep draining
      // after the deploy returned, without holding up the app's next operation.
      await Promise.race([retiring, sleep(RETIRE_WAIT_MS)]);
      return { status: "ready", revision: req.revision, ...endpointsFor(ports!) };
    });
  }

  /** Runs a deployed job again (`caravan job rerun`), its revision unchanged. */
  async rerunJob(scope: Scope, name: string): Promise<DeployResult> {
    const row = this.store.get(scope, name);
    if (!row) throw this.notDeployed(scope, name);
    if (row.kind !== "job") {
      throw new CaravanError(
        "USAGE",
        `${name} is ${row.kind === "app" ? "an app" : "a task environment"}, not a job: caravan job rerun runs a JobEnvironment again`,
      );
    }
    const key = keyOf(scope, name);
    return this.serialized(key, async () => {
      // Read again under the lock: a delete or deploy may have run while this waited.
      const current = this.store.get(scope, name);
      if (!current || current.kind !== "job" || current.desired !== "running")
        throw this.notDeployed(scope, name);
      this.store.event(scope, name, "rerun", current.revision);
      return this.jobs.run(current);
    });
  }

  async reserve(scope: Scope, names: string[]): Promise<Record<string, Endpoints>> {
    const out: Record<string, Endpoints> = {};
    for (const name of names) out[name] = endpointsFor(await this.ports.appPorts(scope, name));
    return out;
  }

  /** Spawns a JS app's new revision; it loads now and starts when `deploy` says so. */
  async prepare(req: DeployRequest): Promise<void> {
    if (req.spec.kind !== "app" || req.spec.serveKind === "command") return; // a command starts as it spawns
    this.warmPool.note(req);
    const key = keyOf(req.scope, req.name);
    await this.serialized(key, async () => {
      if (this.stopping || this.closed) return;
      const row = this.store.get(req.scope, req.name);
      if (row && takenFrom(req, row)) return; // its deploy is refused
      const unchanged =
        row?.revision === req.revision && row.state === "ready" && this.serving.has(key);
      if ((unchanged && !req.force) || this.replicas.preparedRevision(key) === req.revision) return;
      const ports = await this.ports.appPorts(req.scope, req.name);
      await this.replicas.prepare(key, rowOf(req, ports, 0));
    });
  }

  async discard(scope: Scope, name: string): Promise<void> {
    const key = keyOf(scope, name);
    await this.serialized(key, async () => {
      await this.replicas.discardPrepared(key);
      // Never deployed (skipped on its first deploy): its reserved ports go back too.
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

  async deleteRun(id: string): Promise<void> {
    this.tasks.deleteRun(id);
  }

  async pruneRuns(scope: Scope | undefined, opts: RunPrune): Promise<string[]> {
    return this.tasks.pruneRuns(scope, opts);
  }

  async status(scope?: Scope): Promise<EnvironmentStatus[]> {
    await this.gateway.refresh(); // the traffic figures as they are now
    // What status shows as degraded is recorded then too, not only at the next tick.
    this.recordHealth();
    // Replicas whose port also answers beyond loopback (bound to 0.0.0.0, not $HOST). The
    // kernel's socket tables take tens of ms to read with hundreds of apps: read once per
    // status, and only when a replica is new since the last one.
    const unchecked = [...this.serving.values()]
      .flatMap((app) => app.replicas)
      .filter((r) => !r.exposed);
    if (unchecked.length) {
      const found = listenersBeyondLoopback(unchecked.map((r) => r.port));
      for (const r of unchecked) r.exposed = found.has(r.port) ? [found.get(r.port)!] : [];
    }
    return this.store.list(scope).map((row) => {
      const key = keyOf(row, row.name);
      const replicas = this.serving.get(key)?.replicas ?? [];
      // Ready replicas of an app, loaded workers of a task environment: one process each.
      const pids =
        row.kind === "task"
          ? this.tasks.pids(key)
          : row.kind === "job"
            ? this.jobs.pids(key)
            : replicas.map((r) => r.proc.pid);
      const status = this.store.toStatus(
        row,
        pids.map((pid) => ({ id: `pid-${pid}`, ready: true, pid })),
      );
      if (row.kind === "task") return status;
      if (row.kind === "job") return { ...status, jobRuns: this.store.jobRuns(row, row.name) };
      const beyond = replicas.flatMap((r) => r.exposed ?? []);
      if (beyond.length) status.listensBeyondLoopback = beyond;
      if (this.serving.has(key)) {
        const stats = this.gateway.stats(key);
        status.replicas = replicas.length;
        status.traffic = {
          requests: stats.requests,
          errors: stats.errors,
          p50Ms: round(stats.latency.p50),
          p99Ms: round(stats.latency.p99),
        };
      }
      return status;
    });
  }

  /** The start queue's counters: its bound, starts now, waiting, the most ever at once. */
  startStats(): StartStats {
    return this.startQueue.stats();
  }

  /** The warm pool's counters: size, idle and warming processes, their memory. */
  warmPoolStats(): WarmPoolStats {
    return this.warmPool.stats();
  }

  /** Prometheus text for the gateway's traffic (requests, latency, in flight, replicas). */
  async metrics(): Promise<string> {
    await this.gateway.refresh();
    return this.gateway.metrics();
  }

  /**
   * A link that opens an app's public endpoint in a browser: a one-time code the gateway
   * trades for a session cookie.
   */
  private loginLink(scope: Scope, name: string, ttlMs = 5 * 60_000): string {
    const row = this.store.get(scope, name);
    if (!row?.ports) {
      if (row)
        throw new CaravanError(
          "USAGE",
          `"${name}" is a task environment: it has no endpoint to open (apps have)`,
        );
      throw this.notDeployed(scope, name);
    }
    if (!this.serving.has(keyOf(scope, name)))
      throw new CaravanError(
        "APP_NOT_READY",
        `"${name}" is ${row.desired === "stopped" ? "stopped" : row.state}: deploy it, then ask for a link`,
      );
    const code = this.tokenStore.loginCode(keyOf(scope, name), ttlMs);
    return `${endpointsFor(row.ports).endpoint}${LOGIN_PATH}?code=${encodeURIComponent(code)}`;
  }

  /**
   * The console's login: a one-time link to the API's `/console/login` (valid 5 minutes) and
   * the browser session it is traded for (12 h). Sessions are those of `token link`, kept
   * under a name no app can have, so an app's session never opens the console.
   */
  readonly consoleSessions = {
    link: (): string => {
      if (!this.apiAccess) throw new CaravanError("INTERNAL", "the API does not listen yet");
      const code = this.tokenStore.loginCode(CONSOLE_SESSION_APP, 5 * 60_000);
      return `${this.apiAccess.url}${CONSOLE_LOGIN_PATH}?code=${encodeURIComponent(code)}`;
    },
    redeem: (code: string) => this.tokenStore.redeem(code, CONSOLE_SESSION_APP),
    verify: (session: string) =>
      isSessionValue(session) && this.tokenStore.verify(session, CONSOLE_SESSION_APP),
  };

  /** Starts a stopped environment again from its last deploy request (`POST /v1/start`). */
  start(scope: Scope, name: string): Promise<DeployResult> {
    return this.deploy({ ...this.lastRequest(scope, name), force: false });
  }

  /** Replaces an environment's replicas (or workers) with fresh ones, without downtime. */
  restart(scope: Scope, name: string): Promise<DeployResult> {
    const row = this.store.get(scope, name);
    if (row?.desired !== "running")
      throw new CaravanError("USAGE", `${name} is stopped: start it instead of restarting it`);
    return this.deploy({ ...this.lastRequest(scope, name), force: true });
  }

  /** NOT_DEPLOYED for `name`, listing what the scope has instead. */
  private notDeployed(scope: Scope, name: string): CaravanError {
    return notDeployed(
      scope,
      [name],
      this.store.list(scope).map((r) => r.name),
    );
  }

  private lastRequest(scope: Scope, name: string): DeployRequest {
    const row = this.store.get(scope, name);
    if (!row) throw this.notDeployed(scope, name);
    if (row.kind === "job")
      throw new CaravanError("USAGE", `${name} is a job: run it again with caravan job rerun`);
    return row.request;
  }

  /**
   * Sets a serving app's replicas to `replicas`, within its `scaling.replicas` bounds. The
   * autoscaler goes on from there (it scales in only after `scaledownAfter` without load).
   */
  async scale(scope: Scope, name: string, replicas: number): Promise<{ replicas: number }> {
    const key = keyOf(scope, name);
    return this.serialized(key, async () => {
      const app = this.serving.get(key);
      const row = app?.row;
      const spec = row?.request.spec;
      if (!app || !row || spec?.kind !== "app")
        throw new CaravanError(
          "APP_NOT_READY",
          `${name} is not a serving app: deploy or start it, then scale it`,
        );
      const [min, max] = spec.scaling.replicas;
      if (!Number.isInteger(replicas) || replicas < min || replicas > max)
        throw new CaravanError(
          "VALIDATION",
          `${name} scales from ${min} to ${max} replicas (scaling.replicas), not ${replicas}`,
          { field: "replicas" },
        );
      const list = [...app.replicas];
      this.store.event(row, name, "scale", `${list.length} -> ${replicas} replicas (by request)`);
      if (replicas > list.length) await this.replicas.grow(app, replicas - list.length);
      else {
        const retiring = Promise.all(list.slice(replicas).map((r) => this.replicas.retire(app, r)));
        await Promise.race([retiring, sleep(RETIRE_WAIT_MS)]); // long requests drain on
      }
      app.target = replicas;
      app.lastScaleAt = Date.now();
      return { replicas };
    });
  }

  /**
   * What the console shows of an environment beyond its status (`GET /v1/environments/:name`):
   * its declaration without values (inputs by name and kind, secrets by name: never a value)
   * and its revisions with when each was deployed.
   */
  describe(scope: Scope, name: string): EnvironmentDescription {
    const row = this.store.get(scope, name);
    if (!row) throw this.notDeployed(scope, name);
    const spec = row.request.spec;
    return {
      name,
      kind: row.kind,
      desired: row.desired,
      ...(spec.description ? { description: spec.description } : {}),
      dependsOn: spec.dependsOn,
      dependents: this.store
        .list(scope)
        .filter((r) => r.request.spec.dependsOn.includes(name))
        .map((r) => r.name),
      secrets: spec.secrets.map((s) => s.key),
      inputs:
        spec.kind === "task"
          ? []
          : spec.inputs.map((i) => ({
              name: i.name,
              kind: typeof i.value === "string" ? "string" : i.value.kind,
              envVar: i.envVar,
            })),
      ...(spec.kind === "app"
        ? {
            scaling: { min: spec.scaling.replicas[0], max: spec.scaling.replicas[1] },
            requiresAuth: spec.requiresAuth,
            serveKind: spec.serveKind,
            links: spec.links,
          }
        : {}),
      ...(spec.kind === "task" ? { tasks: spec.tasks.map((t) => t.id) } : {}),
      revisions: this.store.revisions(scope, name),
    };
  }

  /** A scope's events, oldest first (`GET /v1/events`). */
  events(scope: Scope, after?: number, limit?: number): EventRecord[] {
    return this.store.events(scope, after, limit);
  }

  stop(scope: Scope, names: string[], opts: { cascade?: boolean } = {}): Promise<string[]> {
    return this.takeDown(scope, names, opts, false);
  }

  delete(scope: Scope, names: string[], opts: { cascade?: boolean } = {}): Promise<string[]> {
    return this.takeDown(scope, names, opts, true);
  }

  async *logs(scope: Scope, name: string, opts: LogsOptions = {}): AsyncIterable<string> {
    if (!this.store.get(scope, name)) throw this.notDeployed(scope, name);
    yield* readLog(logFile(this.paths, scope.project, scope.domain, name), this.logKeeper, opts);
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
      // Nothing left to serve: the gateway goes too (with --keep-apps it serves on).
      await this.gateway.stop();
    }
    await this.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.housekeeping);
    this.autoscaler.close();
    clearInterval(this.healthWatch);
    this.logKeeper.close();
    // The gateway process serves on; a new control plane adopts it.
    this.gateway.detach();
    await this.replicas.drained();
    for (const app of this.serving.values()) app.cancelRestart();
    await this.tasks.close();
    // A job's attempt holds its key: stopped, or the wait below would last its timeout.
    await this.jobs.cancelAll();
    // Wait for prepared processes to be gone: whoever closes us may exit right after.
    const discarding = this.replicas.discardAllPrepared();
    await Promise.allSettled([...this.locks.values(), ...discarding, this.warmPool.close()]);
    this.telemetry.close();
    this.store.close();
  }

  // --- internals ---

  private async takeDown(
    scope: Scope,
    names: string[],
    opts: { cascade?: boolean },
    forget: boolean,
  ): Promise<string[]> {
    const order = teardownOrder(
      scope,
      this.store.list(scope).map((r) => ({
        name: r.name,
        dependsOn: r.request.spec.dependsOn,
        running: r.desired === "running",
      })),
      names,
      { cascade: opts.cascade ?? false, verb: forget ? "delete" : "stop" },
    );
    for (const name of order) {
      const key = keyOf(scope, name);
      // A job's attempt holds its key until it ends: stopped first, so this does not wait
      // (and none starts until this is done).
      await this.jobs.cancel(key);
      await this.serialized(key, async () => {
        // A dependent deployed since the order was decided (a deploy running alongside):
        // taking this one down would leave it running against nothing.
        refuseNewDependents(this.store, scope, name, forget ? "delete" : "stop");
        this.serving.get(key)?.cancelRestart();
        this.store.setDesired(scope, name, "stopped");
        // Its record goes with it: a later start begins with no crash count or scaling history.
        const app = this.serving.get(key);
        this.serving.delete(key);
        app?.cancelRestart();
        await this.replicas.stopAll(key, app);
        await this.tasks.unregister(scope, name);
        if (forget) {
          await this.replicas.discardPrepared(key);
          this.store.remove(scope, name);
          this.store.releasePort(scope, name);
          this.tokenStore.forgetApp(key);
          await this.logKeeper.remove(logFile(this.paths, scope.project, scope.domain, name));
        } else this.store.setState(scope, name, "stopped");
        this.store.event(scope, name, forget ? "deleted" : "stopped");
      }).finally(() => this.jobs.allow(key));
    }
    return order;
  }

  /** Opens (or re-opens) the app's endpoints on the gateway. */
  private async openEndpoints(row: EnvironmentRow, recovering = false): Promise<void> {
    const key = keyOf(row, row.name);
    try {
      // Recovering, a gateway that cannot start now does not fail the app: it opens later.
      await this.gateway.open(key, row.ports!, routeOf(row), { orLater: recovering });
    } catch (e) {
      throw new CaravanError(
        "APP_NOT_READY",
        `${row.name}: its endpoints ${endpointsFor(row.ports!).endpoint} and ${endpointsFor(row.ports!).internalEndpoint} cannot be opened (${(e as Error).message}); stop what uses those ports, or delete and deploy ${row.name} again for new ones`,
      );
    }
  }

  /** The gateway found no replica for a request: start one and let the request wait for it. */
  private wake(key: string): Promise<void> {
    return this.serialized(key, async () => {
      if (this.stopping || this.closed) throw new Error("the control plane is shutting down");
      const app = this.serving.get(key);
      if (app?.replicas.length) return;
      if (!app) throw new Error("it is not deployed");
      const row = app.row;
      this.store.event(row, row.name, "wake", "a request arrived with no replica running");
      try {
        await this.replicas.grow(app, 1);
      } catch (e) {
        const why = headline((e as Error).message);
        // A crash restart may be pending (or was): it goes on, on its own schedule.
        if (!app.restartTimer && minReplicas(row) > 0) this.scheduleRestart(app);
        throw new Error(`${why} (see caravan logs ${row.name})`, { cause: e });
      }
      app.target = Math.max(1, app.target);
      app.lastScaleAt = Date.now();
      if (this.store.get(row, row.name)?.state !== "ready")
        this.store.setState(row, row.name, "ready");
    });
  }

  /**
   * An event when an environment turns degraded (with the reason) or healthy again. What was
   * last recorded counts as before, across control-plane restarts and across a stop: a new
   * daemon does not record a still-degraded environment again, and one stopped while degraded
   * gets its closing `healthy` when it serves again.
   */
  private recordHealth(rows = this.store.list()): void {
    if (this.closed) return;
    const next = dependencyHealth(
      rows.map((r) => ({ ...r, dependsOn: r.request.spec.dependsOn, error: r.error })),
    );
    // Stopped or failed environments have no health now: keep what they last had.
    for (const r of rows) {
      const key = keyOf(r, r.name);
      const last = this.health.get(key);
      if (!next.has(key) && last) next.set(key, last);
    }
    for (const [key, h] of next) {
      const before = this.health.get(key);
      // A changed reason is not news (a crash loop changes it on every restart): status has it.
      if (before?.state === h.state) continue;
      // Healthy is news only after degraded: a new environment starts healthy silently.
      if (h.state === "degraded" || before?.state === "degraded") {
        const row = rows.find((r) => keyOf(r, r.name) === key)!;
        this.store.event(row, row.name, h.state, h.reason ?? "");
      }
    }
    this.health = next;
  }

  /** A replica exited on its own: it is restarted after the app's crash backoff. */
  private restartCrashed(app: ServingApp, replica: Replica, info: ExitInfo): void {
    const { row } = app;
    const latest = this.store.get(row, row.name);
    if (!latest || latest.desired !== "running") return;
    const how = info.signal
      ? `was killed by ${info.signal}`
      : info.code === null
        ? "exited"
        : `exited with code ${info.code}`;
    app.crashed(replica);
    this.store.bumpRestarts(row, row.name);
    this.store.event(row, row.name, "crashed", how);
    this.scheduleRestart(app, undefined, `${row.name} ${how}`);
  }

  /** Starts the replicas an app is missing after `delayMs` (by default its crash backoff). */
  private scheduleRestart(app: ServingApp, delayMs?: number, why?: string): void {
    if (this.closed || this.stopping) return;
    const { key, row } = app;
    const backoff = app.nextRestartDelay();
    const delay = delayMs ?? backoff;
    this.store.event(row, row.name, "restart-scheduled", `in ${delay} ms`);
    // Other replicas still serve: the app is ready, one replica is being replaced.
    if (!app.replicas.length)
      this.store.setState(
        row,
        row.name,
        "restarting",
        why ? `${why}; restarting in ${delay} ms` : null,
      );
    app.cancelRestart();
    const timer = setTimeout(() => {
      app.restartTimer = undefined;
      void this.serialized(key, async () => {
        if (this.closed || this.stopping) return;
        const latest = this.store.get(row, row.name);
        // Replaced by a deploy or dropped by a stop meanwhile: the current one decides.
        const serving = this.serving.get(key);
        if (!latest || latest.desired !== "running" || !serving) return;
        const missing = Math.max(1, serving.target) - serving.replicas.length;
        if (missing <= 0) return;
        try {
          await this.replicas.grow(serving, missing);
          this.store.setState(row, row.name, "ready");
          this.store.event(row, row.name, "restarted");
        } catch (e) {
          this.store.event(row, row.name, "restart-failed", (e as Error).message);
          this.scheduleRestart(serving, undefined, headline((e as Error).message));
        }
      });
    }, delay);
    timer.unref();
    app.restartTimer = timer;
  }

  /** Every app's log is watched (an adopted app's too) and checked now and then anyway. */
  private sweepLogs(): void {
    for (const row of this.store.list())
      this.logKeeper.watch(logFile(this.paths, row.project, row.domain, row.name));
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

function rowOf(req: DeployRequest, ports: AppPorts | null, restarts: number): EnvironmentRow {
  return {
    project: req.scope.project,
    domain: req.scope.domain,
    name: req.name,
    kind: req.kind,
    revision: req.revision,
    request: { ...req, force: false, replace: false },
    ports,
    state: "starting",
    desired: "running",
    restarts,
    error: null,
    updatedAt: new Date().toISOString(),
  };
}

function replicaBounds(row: EnvironmentRow): [number, number] {
  const spec = row.request.spec;
  return spec.kind === "app" ? spec.scaling.replicas : [0, 1];
}

const minReplicas = (row: EnvironmentRow) => replicaBounds(row)[0];

function routeOf(row: EnvironmentRow): RouteOptions {
  const spec = row.request.spec;
  if (spec.kind !== "app") return { requiresAuth: true, requestTimeoutMs: 0 };
  return {
    requiresAuth: spec.requiresAuth !== false,
    requestTimeoutMs: (spec.timeouts.request ?? 0) * 1000,
    tracing: spec.tracing !== false,
  };
}

const round = (ms: number) => Math.round(ms * 100) / 100;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms).unref());
