/**
 * The replicas of every app: started (bounded by the start queue, a prepared revision first),
 * added to their app's record and the gateway, watched (exit, liveness), retired (drained,
 * then stopped) and stopped. A replica that exits on its own is handed to `crashed`: what
 * to do about it is the control plane's decision.
 */
import { CaravanError } from "../../errors.ts";
import type { GatewayProcess } from "./gateway-process/client.ts";
import { probeOnce } from "../../sdk/probe.ts";
import type { Launcher } from "./launcher.ts";
import { signalGroup } from "./os.ts";
import type { PortAllocator } from "./ports.ts";
import type { Replica, ServingApp } from "./serving-app.ts";
import type { StartQueue } from "./start-queue.ts";
import { keyOf, type EnvironmentRow, type Store } from "./store.ts";
import type { AppProcess, ExitInfo, Launch } from "./supervisor.ts";

/** A replaced or scaled-in replica finishes its requests for at most this long. */
const DRAIN_GRACE_MS = 30_000;
/** A prepared process nobody starts (its client went away) is dropped after this long. */
const PREPARED_TTL_MS = 10 * 60_000;

/** A replica spawned and on its way to ready. */
interface Starting {
  id: string;
  port: number;
  launch: Launch;
}

export interface ReplicaHooks {
  store: Store;
  gateway: Pick<GatewayProcess, "addReplica" | "drain" | "close">;
  launcher: Launcher;
  ports: PortAllocator;
  startQueue: StartQueue;
  /** False once the control plane shuts down: nothing new is started. */
  accepting(): boolean;
  /** Once closed, the store is not written (it may be closed too). */
  closed(): boolean;
  /** A serving replica exited on its own (it is out of its app and the gateway already). */
  crashed(app: ServingApp, replica: Replica, info: ExitInfo): void;
}

export class Replicas {
  private readonly store: Store;
  private readonly gateway: ReplicaHooks["gateway"];
  private readonly launcher: Launcher;
  private readonly ports: PortAllocator;
  /** Loaded but not started revisions (two-phase start), by environment key. */
  private readonly prepared = new Map<string, Starting & { revision: string; go: () => void }>();
  /** Old replicas still draining after their deploy returned (shutdown waits for them). */
  private readonly retiring = new Map<Promise<void>, string>();

  constructor(private readonly hooks: ReplicaHooks) {
    this.store = hooks.store;
    this.gateway = hooks.gateway;
    this.launcher = hooks.launcher;
    this.ports = hooks.ports;
  }

  /**
   * Spawns `row`'s revision to load now and start when a deploy of that revision starts
   * replicas (`start` takes it first). Unless that happens, it is discarded after a while.
   */
  async prepare(key: string, row: EnvironmentRow): Promise<void> {
    await this.discardPrepared(key);
    let go!: () => void;
    const gate = new Promise<void>((resolve) => (go = resolve));
    const starting = await this.spawn(row, gate);
    this.prepared.set(key, { ...starting, revision: row.revision, go });
    setTimeout(() => {
      if (this.prepared.get(key)?.launch === starting.launch) void this.discardPrepared(key);
    }, PREPARED_TTL_MS).unref();
  }

  /** The revision prepared for the environment, if any. */
  preparedRevision(key: string): string | undefined {
    return this.prepared.get(key)?.revision;
  }

  /** Resolves once no replica drains any more. */
  async drained(): Promise<void> {
    await Promise.allSettled([...this.retiring.keys()]);
  }

  /** Stops every prepared process (each resolves once its process is gone). */
  discardAllPrepared(): Promise<void>[] {
    return [...this.prepared.keys()].map((key) => this.discardPrepared(key));
  }

  /**
   * Starts `n` replicas of the row's revision (the prepared one first) and returns them once
   * all are ready, for `add`. When one fails (or dies before they all are ready), the
   * others are stopped and the error thrown.
   */
  async start(row: EnvironmentRow, n: number): Promise<Replica[]> {
    const key = keyOf(row, row.name);
    const launches: Starting[] = [];
    const prepared = this.prepared.get(key);
    if (prepared?.revision === row.revision) {
      this.prepared.delete(key);
      prepared.go();
      launches.push(prepared);
    }
    try {
      while (launches.length < n) launches.push(await this.spawn(row));
    } catch (e) {
      await Promise.all(launches.map((l) => this.launcher.stop(l.launch)));
      throw e;
    }
    const results = await Promise.allSettled(launches.map((l) => l.launch.ready));
    const failed = results.find((r) => r.status === "rejected");
    const died = results.find((r) => r.status === "fulfilled" && r.value.hasExited);
    if (failed || died || this.hooks.closed()) {
      await Promise.all(launches.map((l) => this.launcher.stop(l.launch)));
      throw failed
        ? failed.reason
        : new CaravanError(
            "APP_EXITED",
            `${row.name} exited right after it was ready (see caravan logs ${row.name})`,
          );
    }
    return launches.map((l, i): Replica => ({
      id: l.id,
      proc: (results[i] as PromiseFulfilledResult<AppProcess>).value,
      port: l.port,
      since: Date.now(),
    }));
  }

  /** Starts `n` more replicas of a serving app (see `start`) and adds them. */
  async grow(app: ServingApp, n: number): Promise<void> {
    for (const replica of await this.start(app.row, n)) this.add(app, replica);
  }

  /** Adds a ready replica to the app's set and to the gateway, and watches it. */
  add(app: ServingApp, replica: Replica): void {
    app.replicas.push(replica);
    this.watch(app, replica);
    this.gateway.addReplica(app.key, { id: replica.id, port: replica.port });
  }

  /**
   * Spawns a replica on a port of its own; `gate` holds its start (two-phase start). Starts
   * are bounded (`startQueue`): a replica waits for a slot before it is spawned, a prepared
   * one (which loads at once) when its gate opens; the slot is held until it is ready or has
   * failed, and its start timeout counts from the slot, never from the wait.
   */
  private async spawn(row: EnvironmentRow, gate?: Promise<void>): Promise<Starting> {
    const port = await this.ports.replicaPort();
    let release: (() => void) | undefined;
    const slot = gate
      ? gate.then(async () => void (release = await this.hooks.startQueue.acquire()))
      : undefined;
    if (!slot) {
      release = await this.hooks.startQueue.acquire();
      if (!this.hooks.accepting()) {
        release();
        this.ports.release(port);
        throw new CaravanError(
          "SERVER_UNREACHABLE",
          `${row.name} was not started: the control plane is shutting down`,
        );
      }
    }
    let launch: Launch;
    try {
      launch = this.launcher.start(row, port, slot);
    } catch (e) {
      release?.();
      this.ports.release(port);
      throw e;
    }
    // A prepared replica that never got its slot (discarded before its gate opened) has none.
    void Promise.allSettled([launch.ready])
      .then(() => slot)
      .then(() => release?.());
    void launch.ready.catch(() => this.ports.release(port));
    return { id: `pid-${launch.proc?.pid ?? port}`, port, launch };
  }

  /** Takes a replica out of the gateway (its requests finish), then stops it. */
  retire(app: ServingApp, replica: Replica, graceMs = DRAIN_GRACE_MS): Promise<void> {
    const key = app.key;
    app.remove(replica);
    // Tracked until the process is gone: stop, delete and shutdown wait for it.
    const done = (async () => {
      await this.gateway.drain(key, replica.id, graceMs);
      await replica.proc.stop();
    })();
    this.retiring.set(done, key);
    void done.finally(() => this.retiring.delete(done));
    return done;
  }

  /** Stops every replica of an app (`app`, when it served) and closes its endpoints. */
  async stopAll(key: string, app: ServingApp | undefined): Promise<void> {
    await Promise.all([...(app?.replicas ?? [])].map((r) => this.retire(app!, r, 5_000)));
    // Closing cuts what still drains from an earlier redeploy or scale-in; then wait for it.
    await this.gateway.close(key);
    await Promise.allSettled([...this.retiring].filter(([, k]) => k === key).map(([p]) => p));
  }

  private watch(app: ServingApp, replica: Replica): void {
    const { key, row } = app;
    const proc = replica.proc;
    const stopChecking = this.checkLiveness(row, replica);
    void proc.exited.then((info) => {
      stopChecking();
      this.ports.release(replica.port);
      if (this.hooks.closed()) return;
      // The app ran in its own process group: children it left (a shell wrapper's server)
      // would keep its port and make every restart fail. The group only: the pid is dead.
      if (!proc.isStopping) signalGroup(proc.pid, proc.startTime, "SIGKILL");
      this.store.removeProcess(proc.pid, proc.startTime);
      if (!app.remove(replica)) return; // retired, replaced or scaled in
      void this.gateway.drain(key, replica.id, 0);
      if (proc.isStopping) return;
      this.hooks.crashed(app, replica, info);
    });
  }

  /**
   * The app's liveness check on one serving replica: after `failures` failed checks in a row
   * its process is killed, and the crash path restarts it. Returns what stops the checks.
   */
  private checkLiveness(row: EnvironmentRow, replica: Replica): () => void {
    const spec = row.request.spec;
    const liveness = spec.kind === "app" ? spec.liveness : undefined;
    if (!liveness) return () => {};
    let failed = 0;
    let checking = false;
    const timer = setInterval(() => {
      if (checking || this.hooks.closed() || replica.proc.isStopping) return;
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

  /** Stops the environment's prepared process, if any; resolves once it is gone. */
  discardPrepared(key: string): Promise<void> {
    const prepared = this.prepared.get(key);
    this.prepared.delete(key);
    return prepared ? this.launcher.stop(prepared.launch) : Promise.resolve();
  }
}
