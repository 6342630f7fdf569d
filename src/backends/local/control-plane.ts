/**
 * The local control plane: keeps environments running as supervised processes on this
 * machine. It implements the backend contract directly (used in-process by `serve`), and
 * the daemon exposes the same object over HTTP. All state that must survive a restart is
 * in the store; `recover()` adopts what still runs and restarts what died.
 */
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { stat } from "node:fs/promises";
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
import { createHmac, timingSafeEqual } from "node:crypto";
import type { HomePaths } from "./home.ts";
import { logFile } from "./home.ts";
import { endpointsFor, freePort, isAlive, listenersBeyondLoopback, signalGroup } from "./os.ts";
import { LOGIN_PATH, type RouteOptions } from "../gateway/index.ts";
import { GatewayProcess } from "./gateway-process/client.ts";
import { desiredReplicas } from "./scaler.ts";
import { notDeployed, teardownOrder } from "../teardown.ts";
import { TokenStore, isSessionValue } from "./tokens.ts";
import { SecretStore } from "./secrets.ts";
import { TaskRunner } from "./tasks.ts";
import { LogKeeper, readSlice, tailLines } from "./logs.ts";
import { JobRunner } from "./jobs.ts";
import { dependencyHealth, type Health } from "../health.ts";
import { API_TOKEN_ENV } from "../../runtime/protocol.ts";
import { commandArgv, inputsDocument, launchEnvironment } from "../launch.ts";
import {
  Store,
  keyOf,
  type AppPorts,
  type EnvironmentRow,
  type EventRecord,
  type ProcessRow,
} from "./store.ts";
import { probeOnce, tcpOpen } from "../../sdk/probe.ts";
import {
  adopt,
  processEnv,
  spawnApp,
  type AppProcess,
  type Launch,
  type LaunchSpec,
} from "./supervisor.ts";
import { findOrphans } from "./orphans.ts";
import { homeId } from "../home.ts";
import { StartQueue, type StartStats } from "./start-queue.ts";
import { TelemetryReceiver } from "./telemetry/receiver.ts";
import { TelemetryStore, telemetryRetentionFrom } from "./telemetry/store.ts";
import { OTLP_BASE } from "../http-routes.ts";
import { WarmPool, type WarmPoolStats } from "./warm-pool.ts";

/** Crash-restart backoff: first retry after 250 ms, doubling, at most 30 s. */
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 30_000;
/** A process that stayed up this long resets the backoff. */
const STABLE_AFTER_MS = 30_000;

/** A prepared process nobody starts (its client went away) is dropped after this long. */
const PREPARED_TTL_MS = 10 * 60_000;
/** A replaced or scaled-in replica finishes its requests for at most this long. */
const DRAIN_GRACE_MS = 30_000;
/** How long a deploy waits for the old replicas to drain and stop before it returns. */
const RETIRE_WAIT_MS = 5_000;
/** How often the autoscaler looks at the gateway's load. */
const SCALE_EVERY_MS = 200;
/** How often dependency health is checked for events (status derives it on every call). */
const HEALTH_EVERY_MS = 1_000;
/** In-flight requests per replica before another is added, when `scaling.concurrency` is unset. */
const DEFAULT_CONCURRENCY = 50;

/** Whom console sessions are for: not a DNS-1123 name, so no app's session can be one. */
const CONSOLE_SESSION_APP = "@console";
/** Where the console's login link points, on the API's own address. */
export const CONSOLE_LOGIN_PATH = "/console/login";

/** One process serving an app, behind the gateway. */
interface ReplicaProc {
  id: string;
  proc: AppProcess;
  /** The port it listens on (the gateway forwards there). */
  port: number;
  since: number;
  /**
   * Where it also listens beyond loopback (see `status`), once looked up: its listener is
   * bound before it is ready and stays as it is, so once per replica is enough.
   */
  exposed?: string[];
}

/** A replica spawned and on its way to ready. */
interface Starting {
  id: string;
  port: number;
  launch: Launch;
}

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
  /** Ready replicas of each app, by environment key. */
  private readonly replicas = new Map<string, ReplicaProc[]>();
  /** The revision each app serves (its row), while its endpoints are open. */
  private readonly serving = new Map<string, EnvironmentRow>();
  /** How many replicas each app should have (the autoscaler moves it within [min, max]). */
  private readonly targets = new Map<string, number>();
  private readonly lastScaleAt = new Map<string, number>();
  /** Replica ports handed out and not yet seen in the store (closes an allocation race). */
  private readonly reservedPorts = new Set<number>();
  /** Old replicas still draining after their deploy returned (shutdown waits for them). */
  private readonly retiring = new Map<Promise<void>, string>();
  /** After a failed scale-out, no new one before this time (ms epoch), and the next delay. */
  private readonly scaleBackoff = new Map<string, { until: number; delayMs: number }>();
  private readonly locks = new Map<string, Promise<unknown>>();
  private readonly restartTimers = new Map<string, NodeJS.Timeout>();
  private readonly crashCounts = new Map<string, number>();
  /** Keeps every app's log under its cap as it is written (see logs.ts). */
  private readonly logKeeper = new LogKeeper();
  /** Loaded but not started revisions (two-phase start), by environment key. */
  private readonly prepared = new Map<string, Starting & { revision: string; go: () => void }>();
  /** Bounds the replicas starting at once (see start-queue.ts). */
  private readonly startQueue = new StartQueue();
  /** Warm runtime processes JS apps and task workers start in (see warm-pool.ts). */
  private readonly warmPool: WarmPool;
  /** Port allocation is serialised: two allocations must never pick the same free port. */
  private portLock: Promise<unknown> = Promise.resolve();
  private readonly housekeeping: NodeJS.Timeout;
  private readonly scaler: NodeJS.Timeout;
  /** Records when an environment becomes degraded or healthy again (its dependencies). */
  private readonly healthWatch: NodeJS.Timeout;
  /** Each environment's health as last recorded (seeded from the events of an earlier daemon). */
  private health = new Map<string, Health>();
  private closed = false;
  /** Set when shutdown begins: from then on nothing new is started. */
  private stopping = false;
  private readonly tasks: TaskRunner;
  private readonly jobs: JobRunner;
  /** Where code in apps and task workers reaches the run API (set once the API listens). */
  private apiAccess?: { url: string; secret: string };

  constructor(private readonly paths: HomePaths) {
    this.store = new Store(paths.db);
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
        const row = this.serving.get(key);
        if (row)
          this.telemetry.recordSpan({
            ...span,
            service: row.name,
            project: row.project,
            domain: row.domain,
          });
      },
    });
    this.tasks = new TaskRunner(this.store, {
      spawnWorker: (row) => {
        const launch = this.spawnLogged(row, this.launchSpec(row, 0));
        this.record(row, launch, 0);
        return launch;
      },
      forgetWorker: (proc) => this.closed || this.store.removeProcess(proc.pid, proc.startTime),
      recordSpan: (span) => this.telemetry.recordSpan(span),
    });
    this.jobs = new JobRunner({
      store: this.store,
      launchSpec: (row) => this.launchSpec(row, 0),
      accepting: () => !this.stopping && !this.closed,
    });
    this.housekeeping = setInterval(() => {
      this.sweepLogs();
      this.tasks.reap();
    }, 30_000);
    this.housekeeping.unref();
    this.scaler = setInterval(() => this.autoscale(), SCALE_EVERY_MS);
    this.scaler.unref();
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
    await this.stopOrphans();
    // Every process is recorded from the moment it is spawned, so none can be orphaned by a
    // control plane that died mid-start. Adopt the replicas of the current revision that
    // serve (their port answers); stop the rest.
    const adopted = new Map<string, ProcessRow[]>();
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
        row.state !== "failed" &&
        row.revision === p.revision &&
        p.port > 0 &&
        (await tcpOpen(p.port, "127.0.0.1", 500));
      if (current) {
        adopted.set(key, [...(adopted.get(key) ?? []), p]);
      } else {
        // Half-started, superseded, a prepared revision, or a task worker: never keep it.
        const stray = adopt(p.pid, p.startTime);
        void stray
          .stop(2000)
          .then(() => this.closed || this.store.removeProcess(p.pid, p.startTime));
        this.store.event(p, p.name, "stray-stopped", `pid ${p.pid}`);
      }
    }
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
        await this.openEndpoints(row);
      } catch (e) {
        this.store.setState(row, row.name, "failed", (e as Error).message);
        // Unreachable and untracked otherwise: its processes go.
        for (const p of adopted.get(key) ?? []) {
          void adopt(p.pid, p.startTime)
            .stop(2000)
            .then(() => this.closed || this.store.removeProcess(p.pid, p.startTime));
        }
        continue;
      }
      this.serving.set(key, row);
      const found = adopted.get(key) ?? [];
      for (const p of found) {
        const replica: ReplicaProc = {
          id: `pid-${p.pid}`,
          proc: adopt(p.pid, p.startTime),
          port: p.port,
          since: Date.now(),
        };
        this.addReplica(row, replica);
        this.store.event(row, row.name, "adopted", `pid ${p.pid}`);
      }
      this.targets.set(key, found.length);
      if (found.length === 0 && (minReplicas(row) > 0 || row.state !== "ready")) {
        this.targets.set(key, Math.max(1, minReplicas(row)));
        this.store.event(row, row.name, "lost", "not running after a control plane restart");
        this.scheduleRestart(row, 0);
      } else {
        this.store.setState(row, row.name, "ready");
      }
    }
    // What was re-opened above is all there is: the gateway closes anything else.
    await this.gateway.reconcile();
  }

  /**
   * Stops the processes of this home that no record names (the store was lost while they
   * ran, e.g. after `server stop --keep-apps`): they cannot be adopted (nothing says what
   * they serve), and a deploy would start a duplicate beside each. Each is logged (the
   * daemon's log) and recorded as an `orphan-stopped` event of the app it says it is.
   */
  private async stopOrphans(): Promise<void> {
    const known = new Set(this.store.allProcesses().map((p) => p.pid));
    const orphans = findOrphans(homeId(), known);
    const leaders = new Set(orphans.filter((o) => o.pid === o.pgrp).map((o) => o.pid));
    await Promise.all(
      orphans
        // A member of an orphaned group goes with its leader.
        .filter((o) => o.pid === o.pgrp || !leaders.has(o.pgrp))
        .map(async (o) => {
          const what = o.name ? `${o.project}/${o.domain}/${o.name}` : "unknown app";
          process.stderr.write(
            `stopping pid ${o.pid} (${what}): a process of this home that no record names (state.db was lost or replaced while it ran)\n`,
          );
          if (o.name && o.project && o.domain)
            this.store.event(o as Scope, o.name, "orphan-stopped", `pid ${o.pid}: no record of it`);
          await adopt(o.pid, o.startTime).stop(2000);
        }),
    );
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
      const ports = req.kind === "app" ? await this.portsFor(scope, req.name) : null;
      // Checked after the last wait, with nothing awaited until this one is recorded as
      // running: a stop or delete of a dependency either came first (refused here) or sees
      // this dependent running (and refuses, see takeDown). Never a dependent left running
      // against a dependency that is gone.
      this.refuseGoneDependencies(req);
      const next = rowOf(req, ports, row && row.revision === req.revision ? row.restarts : 0);
      this.cancelRestart(key);
      // A new revision starts afresh: it inherits no crash backoff from the one it replaces.
      if (row?.revision !== req.revision) this.forgetHistory(key);
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
      const old = this.replicas.get(key) ?? [];
      const replacing = row?.desired === "running" && this.serving.has(key);
      if (!replacing) this.store.upsert(next);
      let fresh: ReplicaProc[];
      try {
        await this.openEndpoints(next);
        // As many as serve now (the load they carry moves over), at least min and one.
        const [min, max] = replicaBounds(next);
        fresh = await this.startReplicas(
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
          if (!this.replicas.get(key)?.length && row!.state === "restarting")
            this.scheduleRestart(row!);
        } else {
          this.store.setState(scope, req.name, "failed", message);
          await this.gateway.close(key);
        }
        throw e;
      }
      // The new replicas take requests now; the old ones get no new ones and drain.
      this.store.upsert({ ...next, state: "ready" });
      this.serving.set(key, next);
      this.gateway.setOptions(key, routeOf(next));
      this.targets.set(key, fresh.length);
      this.lastScaleAt.set(key, Date.now());
      this.scaleBackoff.delete(key);
      const retiring = Promise.all(old.map((r) => this.retireReplica(key, r)));
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
    for (const name of names) out[name] = endpointsFor(await this.portsFor(scope, name));
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
      if ((unchanged && !req.force) || this.prepared.get(key)?.revision === req.revision) return;
      await this.discardPrepared(key);
      const ports = await this.portsFor(req.scope, req.name);
      let go!: () => void;
      const gate = new Promise<void>((resolve) => (go = resolve));
      const starting = await this.spawnReplica(rowOf(req, ports, 0), gate);
      this.prepared.set(key, { ...starting, revision: req.revision, go });
      setTimeout(() => {
        if (this.prepared.get(key)?.launch === starting.launch) void this.discardPrepared(key);
      }, PREPARED_TTL_MS).unref();
    });
  }

  async discard(scope: Scope, name: string): Promise<void> {
    const key = keyOf(scope, name);
    await this.serialized(key, async () => {
      await this.discardPrepared(key);
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
    const unchecked = [...this.replicas.values()].flat().filter((r) => !r.exposed);
    if (unchecked.length) {
      const found = listenersBeyondLoopback(unchecked.map((r) => r.port));
      for (const r of unchecked) r.exposed = found.has(r.port) ? [found.get(r.port)!] : [];
    }
    return this.store.list(scope).map((row) => {
      const key = keyOf(row, row.name);
      // Ready replicas of an app, loaded workers of a task environment: one process each.
      const pids =
        row.kind === "task"
          ? this.tasks.pids(key)
          : row.kind === "job"
            ? this.jobs.pids(key)
            : (this.replicas.get(key) ?? []).map((r) => r.proc.pid);
      const status = this.store.toStatus(
        row,
        pids.map((pid) => ({ id: `pid-${pid}`, ready: true, pid })),
      );
      if (row.kind === "task") return status;
      if (row.kind === "job") return { ...status, jobRuns: this.store.jobRuns(row, row.name) };
      const beyond = (this.replicas.get(key) ?? []).flatMap((r) => r.exposed ?? []);
      if (beyond.length) status.listensBeyondLoopback = beyond;
      if (this.serving.has(key)) {
        const stats = this.gateway.stats(key);
        status.replicas = this.replicas.get(key)?.length ?? 0;
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
      const row = this.serving.get(key);
      const spec = row?.request.spec;
      if (!row || spec?.kind !== "app")
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
      const list = this.replicas.get(key) ?? [];
      this.store.event(row, name, "scale", `${list.length} -> ${replicas} replicas (by request)`);
      if (replicas > list.length) await this.startReplicas(row, replicas - list.length);
      else {
        const retiring = Promise.all(list.slice(replicas).map((r) => this.retireReplica(key, r)));
        await Promise.race([retiring, sleep(RETIRE_WAIT_MS)]); // long requests drain on
      }
      this.targets.set(key, replicas);
      this.lastScaleAt.set(key, Date.now());
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
    const file = logFile(this.paths, scope.project, scope.domain, name);
    let offset = 0;
    // Read backwards from the end, never the whole file, and never synchronously.
    const first = await tailLines(file, opts.tail).catch(() => undefined);
    let lines = first?.lines ?? [];
    // Just rotated (or a short log): the lines before are at the end of `.1`.
    if (opts.tail === undefined || lines.length < opts.tail) {
      const rest = opts.tail === undefined ? undefined : opts.tail - lines.length;
      const older = await tailLines(`${file}.1`, rest).catch(() => undefined);
      if (older) lines = [...older.lines, ...lines];
    }
    for (const line of lines) yield line;
    if (first) offset = first.end;
    let partial = "";
    let rotations = this.logKeeper.rotation(file).count;
    // A follower reads at most this much per poll: behind a chatty app, it skips ahead.
    const perPoll = 4 * 1024 * 1024;
    while (opts.follow && !opts.signal?.aborted) {
      await new Promise((r) => setTimeout(r, 200));
      let rotated = "";
      const rotation = this.logKeeper.rotation(file);
      if (rotation.count !== rotations) {
        // Rotated since the last poll: the rest of what we had not read is in `.1`, which
        // begins at `base` of the old file.
        rotations = rotation.count;
        try {
          const kept = (await stat(`${file}.1`)).size;
          const from = Math.max(0, offset - rotation.base, kept - perPoll);
          rotated = await readSlice(`${file}.1`, from, kept);
        } catch {
          /* rotated again meanwhile: that part is gone */
        }
        offset = 0;
      }
      let size: number;
      try {
        size = (await stat(file)).size;
      } catch {
        continue; // no log (yet)
      }
      if (size < offset) offset = 0;
      if (size === offset && !rotated) continue;
      if (size - offset > perPoll) {
        offset = size - perPoll;
        partial = "";
      }
      const chunk = partial + rotated + (await readSlice(file, offset, size));
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
      // Nothing left to serve: the gateway goes too (with --keep-apps it serves on).
      await this.gateway.stop();
    }
    await this.close();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this.housekeeping);
    clearInterval(this.scaler);
    clearInterval(this.healthWatch);
    this.logKeeper.close();
    // The gateway process serves on; a new control plane adopts it.
    this.gateway.detach();
    await Promise.allSettled([...this.retiring.keys()]);
    for (const t of this.restartTimers.values()) clearTimeout(t);
    await this.tasks.close();
    // A job's attempt holds its key: stopped, or the wait below would last its timeout.
    await this.jobs.cancelAll();
    // Wait for prepared processes to be gone: whoever closes us may exit right after.
    const discarding = [...this.prepared.keys()].map((key) => this.discardPrepared(key));
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
        this.refuseNewDependents(scope, name, forget ? "delete" : "stop");
        this.cancelRestart(key);
        this.forgetHistory(key);
        this.store.setDesired(scope, name, "stopped");
        await this.stopReplicas(key);
        await this.tasks.unregister(scope, name);
        if (forget) {
          await this.discardPrepared(key);
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

  /**
   * Refuses a deploy whose dependencies were deleted or stopped since its deploy began (by
   * another command): it would run against nothing. `DEPENDENCY_GONE` names them.
   */
  private refuseGoneDependencies(req: DeployRequest): void {
    // A soft dependency (wait: false) may still be on its way: only waited-for ones count.
    const soft = new Set(req.spec.softDependsOn ?? []);
    const gone = req.spec.dependsOn.flatMap((dep) => {
      if (soft.has(dep)) return [];
      const row = this.store.get(req.scope, dep);
      if (!row) return [`${dep} (deleted)`];
      return row.desired === "running" ? [] : [`${dep} (stopped)`];
    });
    if (!gone.length) return;
    const names = req.spec.dependsOn.filter((d) => gone.some((g) => g.startsWith(`${d} `)));
    throw new CaravanError(
      "DEPENDENCY_GONE",
      `${req.name} was not started: its ${gone.length === 1 ? "dependency" : "dependencies"} ${gone.join(", ")} ${gone.length === 1 ? "is" : "are"} no longer running (taken down by another command while this deploy ran); deploy again to bring ${gone.length === 1 ? "it" : "them"} back`,
      { dependencies: names },
    );
  }

  /**
   * DEPENDENTS_EXIST when `name` has a running dependent now: those in the teardown's order
   * went first (dependents first), so one running now was deployed meanwhile.
   */
  private refuseNewDependents(scope: Scope, name: string, verb: string): void {
    const dependents = this.store
      .list(scope)
      .filter((r) => r.desired === "running" && r.request.spec.dependsOn.includes(name))
      .map((r) => r.name);
    if (!dependents.length) return;
    throw new CaravanError(
      "DEPENDENTS_EXIST",
      `cannot ${verb} ${name}: ${dependents.join(", ")} (deployed while this ${verb} waited) depend${dependents.length === 1 ? "s" : ""} on it and ${dependents.length === 1 ? "is" : "are"} running; ${verb} ${dependents.length === 1 ? "it" : "them"} too, or pass --cascade`,
      { dependents },
    );
  }

  /** Opens (or re-opens) the app's endpoints on the gateway. */
  private async openEndpoints(row: EnvironmentRow): Promise<void> {
    const key = keyOf(row, row.name);
    try {
      await this.gateway.open(key, row.ports!, routeOf(row));
    } catch (e) {
      throw new CaravanError(
        "APP_NOT_READY",
        `${row.name}: its endpoints ${endpointsFor(row.ports!).endpoint} and ${endpointsFor(row.ports!).internalEndpoint} cannot be opened (${(e as Error).message}); stop what uses those ports, or delete and deploy ${row.name} again for new ones`,
      );
    }
  }

  /**
   * Starts `n` replicas of the row's revision (the prepared one first); once all are ready
   * they join the app's set and the gateway, and are watched from that moment. When one
   * fails (or dies before they all are ready), the others are stopped and the error thrown.
   */
  private async startReplicas(row: EnvironmentRow, n: number): Promise<ReplicaProc[]> {
    const key = keyOf(row, row.name);
    const launches: Starting[] = [];
    const prepared = this.prepared.get(key);
    if (prepared?.revision === row.revision) {
      this.prepared.delete(key);
      prepared.go();
      launches.push(prepared);
    }
    try {
      while (launches.length < n) launches.push(await this.spawnReplica(row));
    } catch (e) {
      await Promise.all(launches.map((l) => this.stopLaunch(l.launch)));
      throw e;
    }
    const results = await Promise.allSettled(launches.map((l) => l.launch.ready));
    const failed = results.find((r) => r.status === "rejected");
    const died = results.find((r) => r.status === "fulfilled" && r.value.hasExited);
    if (failed || died || this.closed) {
      await Promise.all(launches.map((l) => this.stopLaunch(l.launch)));
      throw failed
        ? failed.reason
        : new CaravanError(
            "APP_EXITED",
            `${row.name} exited right after it was ready (see caravan logs ${row.name})`,
          );
    }
    const fresh = launches.map((l, i): ReplicaProc => ({
      id: l.id,
      proc: (results[i] as PromiseFulfilledResult<AppProcess>).value,
      port: l.port,
      since: Date.now(),
    }));
    for (const replica of fresh) this.addReplica(row, replica);
    return fresh;
  }

  /** Adds a ready replica to the app's set and to the gateway, and watches it. */
  private addReplica(row: EnvironmentRow, replica: ReplicaProc): void {
    const key = keyOf(row, row.name);
    this.replicas.set(key, [...(this.replicas.get(key) ?? []), replica]);
    this.watch(row, replica);
    this.gateway.addReplica(key, { id: replica.id, port: replica.port });
  }

  /**
   * Spawns a replica on a port of its own; `gate` holds its start (two-phase start). Starts
   * are bounded (`startQueue`): a replica waits for a slot before it is spawned, a prepared
   * one (which loads at once) when its gate opens; the slot is held until it is ready or has
   * failed, and its start timeout counts from the slot, never from the wait.
   */
  private async spawnReplica(row: EnvironmentRow, gate?: Promise<void>): Promise<Starting> {
    const port = await this.replicaPort();
    let release: (() => void) | undefined;
    const slot = gate
      ? gate.then(async () => void (release = await this.startQueue.acquire()))
      : undefined;
    if (!slot) {
      release = await this.startQueue.acquire();
      if (this.stopping || this.closed) {
        release();
        this.reservedPorts.delete(port);
        throw new CaravanError(
          "SERVER_UNREACHABLE",
          `${row.name} was not started: the control plane is shutting down`,
        );
      }
    }
    let launch: Launch;
    try {
      launch = this.spawnLogged(row, this.launchSpec(row, port), slot);
    } catch (e) {
      release?.();
      this.reservedPorts.delete(port);
      throw e;
    }
    // A prepared replica that never got its slot (discarded before its gate opened) has none.
    void Promise.allSettled([launch.ready])
      .then(() => slot)
      .then(() => release?.());
    this.record(row, launch, port);
    void launch.ready.catch(() => this.reservedPorts.delete(port));
    return { id: `pid-${launch.proc?.pid ?? port}`, port, launch };
  }

  /** Takes a replica out of the gateway (its requests finish), then stops it. */
  private retireReplica(key: string, replica: ReplicaProc, graceMs = DRAIN_GRACE_MS) {
    const list = this.replicas.get(key);
    if (list?.includes(replica))
      this.replicas.set(
        key,
        list.filter((r) => r !== replica),
      );
    // Tracked until the process is gone: stop, delete and shutdown wait for it.
    const done = (async () => {
      await this.gateway.drain(key, replica.id, graceMs);
      await replica.proc.stop();
    })();
    this.retiring.set(done, key);
    void done.finally(() => this.retiring.delete(done));
    return done;
  }

  /** Stops every replica of an app and closes its endpoints. */
  private async stopReplicas(key: string): Promise<void> {
    const list = this.replicas.get(key) ?? [];
    this.serving.delete(key);
    this.targets.delete(key);
    this.scaleBackoff.delete(key);
    await Promise.all(list.map((r) => this.retireReplica(key, r, 5_000)));
    this.replicas.delete(key);
    // Closing cuts what still drains from an earlier redeploy or scale-in; then wait for it.
    await this.gateway.close(key);
    await Promise.allSettled([...this.retiring].filter(([, k]) => k === key).map(([p]) => p));
  }

  /** The gateway found no replica for a request: start one and let the request wait for it. */
  private wake(key: string): Promise<void> {
    return this.serialized(key, async () => {
      if (this.stopping || this.closed) throw new Error("the control plane is shutting down");
      if (this.replicas.get(key)?.length) return;
      const row = this.serving.get(key);
      if (!row) throw new Error("it is not deployed");
      this.store.event(row, row.name, "wake", "a request arrived with no replica running");
      try {
        await this.startReplicas(row, 1);
      } catch (e) {
        const why = headline((e as Error).message);
        // A crash restart may be pending (or was): it goes on, on its own schedule.
        if (!this.restartTimers.has(key) && minReplicas(row) > 0) this.scheduleRestart(row);
        throw new Error(`${why} (see caravan logs ${row.name})`, { cause: e });
      }
      this.targets.set(key, Math.max(1, this.targets.get(key) ?? 0));
      this.lastScaleAt.set(key, Date.now());
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

  /**
   * Every few hundred ms: compares each app's replicas with what its load needs (see
   * scaler.ts) and adds or removes one. Apps with an operation in flight are left alone.
   */
  private autoscale(): void {
    if (this.closed || this.stopping) return;
    const now = Date.now();
    for (const [key, row] of this.serving) {
      const spec = row.request.spec;
      if (spec.kind !== "app" || this.locks.has(key) || this.restartTimers.has(key)) continue;
      const { scaling } = spec;
      const [min, max] = scaling.replicas;
      const list = this.replicas.get(key) ?? [];
      // With nothing running, a waiting request has already woken the app.
      if (list.length === 0) continue;
      const load = this.gateway.load(key);
      const current = list.length;
      const desired = desiredReplicas({
        min,
        max,
        concurrency: scaling.concurrency ?? DEFAULT_CONCURRENCY,
        scaledownAfterMs: scaling.scaledownAfter * 1000,
        current,
        inFlight: load.inFlight,
        waiting: load.waiting,
        lastActiveAt: load.lastActiveAt,
        lastScaleAt: this.lastScaleAt.get(key) ?? 0,
        now,
      });
      if (desired === current) continue;
      // After a failed scale-out, the next waits out its backoff (scaling in does not).
      if (desired > current && (this.scaleBackoff.get(key)?.until ?? 0) > now) continue;
      this.lastScaleAt.set(key, now);
      this.targets.set(key, desired);
      if (desired > current) {
        this.store.event(row, row.name, "scale-out", `${current} -> ${desired} replicas`);
        void this.serialized(key, async () => {
          const have = this.replicas.get(key)?.length ?? 0;
          if (this.serving.get(key) !== row || have >= desired) return;
          try {
            await this.startReplicas(row, desired - have);
            this.scaleBackoff.delete(key);
          } catch (e) {
            // Back off (1 s doubling to 30 s) and aim at what actually runs.
            const delayMs = Math.min(
              BACKOFF_MAX_MS,
              (this.scaleBackoff.get(key)?.delayMs ?? 500) * 2,
            );
            this.scaleBackoff.set(key, { until: Date.now() + delayMs, delayMs });
            this.targets.set(key, this.replicas.get(key)?.length ?? 0);
            this.store.event(
              row,
              row.name,
              "scale-out-failed",
              `${headline((e as Error).message)}; next try in ${delayMs} ms`,
            );
          }
        });
      } else {
        this.store.event(row, row.name, "scale-in", `${current} -> ${desired} replicas`);
        // The least busy replica goes; it finishes what it has first.
        const victim = [...list].sort(
          (a, b) =>
            (load.replicas.find((r) => r.id === a.id)?.inFlight ?? 0) -
            (load.replicas.find((r) => r.id === b.id)?.inFlight ?? 0),
        )[0]!;
        void this.retireReplica(key, victim);
      }
    }
  }

  private watch(row: EnvironmentRow, replica: ReplicaProc): void {
    const key = keyOf(row, row.name);
    const proc = replica.proc;
    const stopChecking = this.checkLiveness(row, replica);
    void proc.exited.then((info) => {
      stopChecking();
      this.reservedPorts.delete(replica.port);
      if (this.closed) return;
      // The app ran in its own process group: children it left (a shell wrapper's server)
      // would keep its port and make every restart fail. The group only: the pid is dead.
      if (!proc.isStopping) signalGroup(proc.pid, proc.startTime, "SIGKILL");
      this.store.removeProcess(proc.pid, proc.startTime);
      const list = this.replicas.get(key) ?? [];
      if (!list.includes(replica)) return; // retired, replaced or scaled in
      this.replicas.set(
        key,
        list.filter((r) => r !== replica),
      );
      void this.gateway.drain(key, replica.id, 0);
      if (proc.isStopping) return;
      const latest = this.store.get(row, row.name);
      if (!latest || latest.desired !== "running") return;
      const how = info.signal
        ? `was killed by ${info.signal}`
        : info.code === null
          ? "exited"
          : `exited with code ${info.code}`;
      if (Date.now() - replica.since > STABLE_AFTER_MS) this.crashCounts.delete(key);
      this.store.bumpRestarts(row, row.name);
      this.store.event(row, row.name, "crashed", how);
      this.scheduleRestart(latest, undefined, `${row.name} ${how}`);
    });
  }

  /**
   * The app's liveness check on one serving replica: after `failures` failed checks in a row
   * its process is killed, and the crash path restarts it. Returns what stops the checks.
   */
  private checkLiveness(row: EnvironmentRow, replica: ReplicaProc): () => void {
    const spec = row.request.spec;
    const liveness = spec.kind === "app" ? spec.liveness : undefined;
    if (!liveness) return () => {};
    let failed = 0;
    let checking = false;
    const timer = setInterval(() => {
      if (checking || this.closed || replica.proc.isStopping) return;
      checking = true;
      void probeOnce(replica.port, liveness)
        .then((ok) => {
          failed = ok ? 0 : failed + 1;
          if (failed < liveness.failures || replica.proc.hasExited) return;
          clearInterval(timer);
          const what = liveness.tcp ? "a TCP connect" : `GET ${liveness.path ?? "/"}`;
          this.store.event(
            row,
            row.name,
            "liveness-failed",
            `${replica.id}: ${what} failed ${failed} times in a row; restarting it`,
          );
          signalGroup(replica.proc.pid, replica.proc.startTime, "SIGKILL");
        })
        .finally(() => (checking = false));
    }, liveness.intervalS * 1000);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** Crash counts and scaling times of an environment: none survive a stop, delete or revision. */
  private forgetHistory(key: string): void {
    this.crashCounts.delete(key);
    this.lastScaleAt.delete(key);
    this.scaleBackoff.delete(key);
  }

  private scheduleRestart(row: EnvironmentRow, delayMs?: number, why?: string): void {
    if (this.closed || this.stopping) return;
    const key = keyOf(row, row.name);
    const attempt = this.crashCounts.get(key) ?? 0;
    this.crashCounts.set(key, attempt + 1);
    const delay = delayMs ?? Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** attempt);
    this.store.event(row, row.name, "restart-scheduled", `in ${delay} ms`);
    // Other replicas still serve: the app is ready, one replica is being replaced.
    if (!this.replicas.get(key)?.length)
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
        const serving = this.serving.get(key);
        if (!latest || latest.desired !== "running" || !serving) return;
        const missing =
          Math.max(1, this.targets.get(key) ?? 1) - (this.replicas.get(key)?.length ?? 0);
        if (missing <= 0) return;
        try {
          await this.startReplicas(serving, missing);
          this.store.setState(row, row.name, "ready");
          this.store.event(row, row.name, "restarted");
        } catch (e) {
          this.store.event(row, row.name, "restart-failed", (e as Error).message);
          this.scheduleRestart(latest, undefined, headline((e as Error).message));
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
  private record(row: EnvironmentRow, launch: Launch, port: number): void {
    const proc = launch.proc;
    if (!proc) return;
    this.store.addProcessOf(row, proc, port);
    launch.ready.catch(() => this.closed || this.store.removeProcess(proc.pid, proc.startTime));
  }

  private async stopLaunch(launch: Launch): Promise<void> {
    const proc = launch.proc;
    if (!proc) return;
    await proc.stop(2000);
    if (!this.closed) this.store.removeProcess(proc.pid, proc.startTime);
  }

  /** The app's gateway ports: allocated once, kept across redeploys and restarts until delete. */
  private portsFor(scope: Scope, name: string): Promise<AppPorts> {
    return this.allocate(async () => {
      const existing = this.store.portsOf(scope, name);
      if (existing) return existing;
      const used = this.usedPorts();
      const pub = await freePort(used);
      used.add(pub);
      const ports = { public: pub, internal: await freePort(used) };
      this.store.assignPorts(scope, name, ports);
      return ports;
    });
  }

  /** A port for a new replica (recorded with its process once spawned). */
  private replicaPort(): Promise<number> {
    return this.allocate(async () => {
      const port = await freePort(this.usedPorts());
      this.reservedPorts.add(port);
      return port;
    });
  }

  private usedPorts(): Set<number> {
    const used = this.store.usedPorts();
    for (const p of this.reservedPorts) used.add(p);
    return used;
  }

  private allocate<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.portLock.then(fn);
    this.portLock = run.catch(() => {});
    return run;
  }

  private cancelRestart(key: string): void {
    const t = this.restartTimers.get(key);
    if (t) clearTimeout(t);
    this.restartTimers.delete(key);
  }

  /** How to start a process of `row` listening on `port` (0 for a task worker). */
  private launchSpec(row: EnvironmentRow, port: number): LaunchSpec {
    const req = row.request;
    const spec = req.spec;
    const env = launchEnvironment(req, {
      inputsFile: this.writeInputsFile(row),
      apiUrl: this.apiAccess?.url ?? "",
      // The receiver is on the API's port, under its own path (see http-routes.ts).
      ...(this.apiAccess
        ? {
            otlp: {
              endpoint: `${this.apiAccess.url}${OTLP_BASE}`,
              ...(port ? { replica: String(port) } : {}),
            },
          }
        : {}),
    });
    // Where a process listens: loopback only, behind the gateway (JS apps are told so in
    // their runtime config; a command app reads $HOST).
    env.HOST = "127.0.0.1";
    // Expansion in arguments sees everything but secrets and the run token (credentials: an
    // argv is visible to every user): both are added after.
    const argv = commandArgv(req, env, port);
    if (this.apiAccess) {
      env[API_TOKEN_ENV] = scopedRunToken(this.apiAccess.secret, row);
      // OTLP exporters authenticate with the same scoped token (the receiver takes it) — only
      // when they send to this receiver: an app that names its own collector never sends it
      // caravan's token.
      const receiver = `${this.apiAccess.url}${OTLP_BASE}`;
      if (
        env.OTEL_EXPORTER_OTLP_ENDPOINT === receiver &&
        !("OTEL_EXPORTER_OTLP_HEADERS" in spec.envVars) &&
        !("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in spec.envVars)
      )
        env.OTEL_EXPORTER_OTLP_HEADERS = `authorization=Bearer%20${env[API_TOKEN_ENV]}`;
    }
    // Secret values are read from the store at launch: never from the request or the store DB.
    if (spec.secrets.length) {
      const values = new SecretStore(this.paths.secrets).resolve(
        row,
        spec.secrets.map((s) => s.key),
        row.name,
      );
      for (const s of spec.secrets) env[s.envVar] = values[s.key]!;
    }
    const base = {
      name: row.name,
      port,
      logFile: logFile(this.paths, row.project, row.domain, row.name),
      startTimeoutMs: (spec.kind === "app" ? spec.timeouts.start : 60) * 1000,
      env,
    };
    // A command app or job runs its command; a JS app, task worker or function job the runtime.
    if (spec.kind !== "task" && argv.length) {
      return {
        ...base,
        mode: {
          kind: "command",
          argv,
          // With `include`, the command runs in its file snapshot.
          cwd: req.files && spec.include.length ? req.files.dir : req.code.sourceRoot,
          ...(spec.kind === "app" ? { readiness: spec.readiness } : {}),
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
   * `$CARAVAN_INPUTS_FILE` (see `inputsDocument`): one file per revision, which every replica
   * and restart shares.
   */
  private writeInputsFile(row: EnvironmentRow): string {
    const dir = join(this.paths.inputFiles, row.project, row.domain);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${row.name}-${row.revision}.json`);
    if (existsSync(file)) return file;
    writeFileSync(file, JSON.stringify(inputsDocument(row.request), null, 2) + "\n");
    return file;
  }

  /**
   * Starts a process of `row` (in a warm one when the pool has one for it) and keeps its log
   * under the cap as it writes (see logs.ts).
   */
  private spawnLogged(row: EnvironmentRow, spec: LaunchSpec, gate?: Promise<void>): Launch {
    const warm =
      spec.mode.kind === "runtime" && WarmPool.allows(row.request, processEnv(spec))
        ? this.warmPool.take(spec.mode.runtimeMain)
        : undefined;
    const launch = spawnApp(spec, gate, warm);
    this.logKeeper.watch(spec.logFile);
    return launch;
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

/**
 * A command app's replicas listen on ports caravan picks (`$PORT`, one per replica, so a new
 * revision starts beside the old one): a port it declares cannot be honoured here, so it is
 * refused rather than ignored. (On a cluster the declared port is the container's.)
 */
function refuseFixedPort(req: DeployRequest): void {
  const spec = req.spec;
  if (spec.kind !== "app" || spec.serveKind !== "command" || !spec.port.declared) return;
  throw new CaravanError(
    "VALIDATION",
    `${req.name} declares port ${spec.port.port}, but a local command app listens on the port caravan gives each replica in $PORT (on $HOST): remove port from ${req.name} and make its command use $PORT (e.g. args: ["--port", "$PORT"])`,
    { app: req.name, port: spec.port.port },
  );
}

/** The file that deployed `row`, when `req` comes from another one and does not replace it. */
function takenFrom(req: DeployRequest, row: EnvironmentRow): string | undefined {
  const owner = row.request.source;
  return owner && req.source && owner !== req.source && !req.replace ? owner : undefined;
}

/**
 * An environment belongs to the file that deployed it: a second file declaring one of the
 * same name would silently replace it (and break its dependents), so it is refused, naming
 * both files, unless the deploy says `replace` (`--replace`, e.g. after moving the project).
 */
function refuseTakeover(req: DeployRequest, row: EnvironmentRow | undefined): void {
  const owner = row && takenFrom(req, row);
  if (!owner) return;
  const where = `${req.scope.project}/${req.scope.domain}`;
  throw new CaravanError(
    "NAME_TAKEN",
    `${req.name} in ${where} was deployed from ${owner}, and ${req.source} declares another ${req.name}: rename one of them (or deploy to another --project/--domain), delete the deployed one (caravan delete ${req.name}), or pass --replace to take it over (e.g. after moving the project)`,
    { name: req.name, owner, source: req.source },
  );
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
