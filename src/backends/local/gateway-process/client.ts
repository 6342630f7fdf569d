/**
 * The control plane's side of the gateway process (main.ts): the methods the control plane
 * calls on a `Gateway`, carried over the channel (protocol.ts), plus the process's life cycle
 * — adopted when one runs for this home (never two), spawned when none does, restarted with
 * the crash backoff when it dies, its listeners back on the same ports.
 *
 * It keeps the state it was told (routes, options, replicas): after the gateway restarts, or
 * once a new control plane has adopted everything (`reconcile`), it sends all of it and the
 * gateway serves exactly that. Load, traffic figures and spans come back in the gateway's
 * reports (every 200 ms); wake requests come from the gateway and are answered.
 *
 * A gateway whose primary died is not replaced while its workers live: they serve on and
 * spawn a successor (succession.ts), which is adopted. A gateway of another protocol version
 * is asked to hand over to this caravan's gateway (`Handover`); only one too old for that
 * (protocol 1) is replaced, its listeners closed for the moment in between.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, openSync } from "node:fs";
import type { Socket } from "node:net";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AppLoad, AppStats, Replica, RouteOptions } from "../../gateway/index.ts";
import type { RecordSpan } from "../../gateway/trace.ts";
import { buildRuntime } from "../../runtime-build.ts";
import type { HomePaths } from "../home.ts";
import { isAlive, processStartTime } from "../os.ts";
import { BACKOFF_FIRST_MS, BACKOFF_MAX_MS, STABLE_AFTER_MS } from "../crash-backoff.ts";
import type { Store } from "../store.ts";
import { GATEWAY_PROCESS_ENTRY } from "./entry.ts";
import {
  GATEWAY_META,
  PROTOCOL,
  connectTo,
  gatewayLog,
  greeting,
  helloAt,
  readMessages,
  send,
  socketPath,
  PendingRequests,
  type FromGateway,
  type Hello,
  type Ports,
  type Proc,
  type RouteState,
  type ToGateway,
} from "./protocol.ts";
import { awaitSuccessor, handoverPending, successionPending } from "./succession.ts";

/** How long a spawned gateway may take to listen on its socket. */
const START_TIMEOUT_MS = 15_000;
/** How long the gateway may take to answer a request (a drain: its grace more; a sync: per route). */
const REQUEST_TIMEOUT_MS = 10_000;
/** How long a gateway told to exit may take before it is killed. */
const EXIT_WAIT_MS = 5_000;
/**
 * How long the workers of a primary that died may take to have a successor answer: what a
 * gateway gets to start (a successor starts as one does), at no cost to traffic — the orphans
 * serve meanwhile. Past it they are ended for a new gateway; a successor answering before
 * that one is up is found by it (it leaves) and adopted.
 */
const SUCCESSION_WAIT_MS = START_TIMEOUT_MS;
/** The first protocol whose gateways understand `Handover`. */
const HANDOVER_SINCE = 2;

export interface GatewayProcessHooks {
  /** A request arrived for an app with no replica (see `GatewayHooks.wake`). */
  wake(app: string): Promise<void>;
  recordSpan: RecordSpan;
  /** Says what happened to the process (logged by the daemon). */
  log?(line: string): void;
}

/** The gateway's primary, and its workers (which outlive it). */
interface Recorded extends Proc {
  workers?: Proc[];
}

type WithoutId<T> = T extends { id: number } ? Omit<T, "id"> : never;

export class GatewayProcess {
  private readonly routes = new Map<string, RouteState>();
  private socket?: Socket;
  private connectedAt = 0;
  private starting?: Promise<void>;
  private restartTimer?: NodeJS.Timeout;
  private backoffMs = BACKOFF_FIRST_MS;
  /**
   * Whether `routes` is the whole truth, to be pushed on every (re)connect. Not yet while a
   * new control plane adopts a running gateway: it must not close what recovery re-opens next.
   */
  private synced = false;
  private detached = false;
  /** A start failed and is to be tried again (`failed`). */
  private retryPending = false;
  private nextId = 1;
  private readonly pending = new PendingRequests();
  private report?: Extract<FromGateway, { t: "report" }>;

  constructor(
    private readonly paths: HomePaths,
    private readonly store: Store,
    private readonly hooks: GatewayProcessHooks,
  ) {}

  /** The gateway process now, if one is recorded and alive. */
  get running(): Recorded | undefined {
    const recorded = this.recorded();
    return recorded && isAlive(recorded.pid, recorded.startTime) ? recorded : undefined;
  }

  /**
   * Connects to the gateway a previous control plane left running, if there is one (or to
   * the successor the workers of a dead one are bringing up, or brought up meanwhile).
   */
  async adopt(): Promise<void> {
    if (this.running || this.orphans().length > 0 || (await this.recordAnswering()))
      await this.ensure();
  }

  /** Recovery is done: the state given since is complete; the gateway drops anything else. */
  async reconcile(): Promise<void> {
    this.synced = true;
    if (this.socket) await this.request({ t: "sync", routes: [...this.routes.values()] });
    else if (this.routes.size > 0) await this.ensure().catch((e: Error) => this.failed(e));
  }

  /**
   * Opens (or moves) the app's endpoints. When the gateway cannot be started, it throws — or,
   * with `orLater` (a control plane recovering what serves), keeps the route for when the
   * gateway is back (restarted with the backoff): the apps behind it are not given up for that.
   */
  async open(
    app: string,
    ports: Ports,
    options: RouteOptions,
    { orLater = false }: { orLater?: boolean } = {},
  ): Promise<void> {
    const existing = this.routes.get(app);
    this.routes.set(app, { app, ports: { ...ports }, options, replicas: existing?.replicas ?? [] });
    // A failed open leaves what served before (a redeploy's old revision serves on).
    const undo = () => {
      if (this.routes.get(app)?.ports.public !== ports.public) return;
      if (existing) this.routes.set(app, existing);
      else this.routes.delete(app);
    };
    // Already failed to start and to be retried: the route waits for that retry.
    if (orLater && !this.socket && this.retryPending) return;
    try {
      await this.ensure();
    } catch (e) {
      if (orLater) return this.failed(e as Error);
      undo();
      throw e;
    }
    try {
      await this.request({ t: "open", app, ports, options });
    } catch (e) {
      undo();
      throw e;
    }
  }

  setOptions(app: string, options: RouteOptions): void {
    const route = this.routes.get(app);
    if (!route) return;
    route.options = options;
    this.tell({ t: "options", app, options });
  }

  addReplica(app: string, replica: Replica): void {
    const route = this.routes.get(app);
    if (!route) return;
    route.replicas = [...route.replicas.filter((r) => r.id !== replica.id), { ...replica }];
    this.tell({ t: "replica", app, replica });
  }

  drain(app: string, replicaId: string, graceMs: number): Promise<void> {
    const route = this.routes.get(app);
    if (route) route.replicas = route.replicas.filter((r) => r.id !== replicaId);
    return this.request({ t: "drain", app, replica: replicaId, graceMs }).catch(() => {});
  }

  async close(app: string): Promise<void> {
    this.routes.delete(app);
    await this.request({ t: "close", app }).catch(() => {});
  }

  /** Tokens were created or revoked: the gateway stops trusting what it verified before. */
  tokensChanged(): Promise<void> {
    return this.request({ t: "tokens" }).catch(() => {});
  }

  /** Asks for a report now, so that `stats` and `metrics` are up to date. */
  refresh(): Promise<void> {
    return this.request({ t: "report" }).catch(() => {});
  }

  load(app: string): AppLoad {
    const reported = this.report?.apps[app]?.load;
    if (reported) return reported;
    // Not reported yet (just opened, or the gateway is restarting): counted as active, so
    // nothing scales in or to zero on a lack of figures.
    const replicas = (this.routes.get(app)?.replicas ?? []).map((r) => ({ ...r, inFlight: 0 }));
    return { replicas, inFlight: 0, waiting: 0, draining: 0, lastActiveAt: Date.now() };
  }

  stats(app: string): AppStats {
    return (
      this.report?.apps[app]?.stats ?? {
        requests: 0,
        errors: 0,
        latency: { p50: 0, p99: 0, count: 0 },
      }
    );
  }

  metrics(): string {
    return this.report?.metrics ?? "";
  }

  /** Lets go of the gateway, which serves on (the control plane stops; `--keep-apps`, a crash). */
  detach(): void {
    this.detached = true;
    clearTimeout(this.restartTimer);
    this.socket?.end();
    this.socket = undefined;
    this.settleAll();
  }

  /** Stops the gateway process (`server stop` with the apps): its listeners close. */
  async stop(): Promise<void> {
    this.detached = true;
    clearTimeout(this.restartTimer);
    // A gateway being started now would otherwise come up after the stop, on the ports.
    await this.starting?.catch(() => {});
    // Workers of a primary that died (and whose successor has not answered yet): they end the
    // successor they spawned that has not answered.
    const orphans = this.orphans();
    // None recorded lives: a dead primary's successor may answer, which its orphans brought up
    // while this control plane waited out its restart backoff (recorded nowhere yet).
    const proc = this.running ?? (await this.recordAnswering());
    if (this.socket) await this.request({ t: "exit" }).catch(() => {});
    if (proc) await stopProcess(proc);
    await Promise.all(orphans.map((w) => stopProcess(w)));
    // A successor that answered just as its orphans were stopped: they leave it serving.
    const late = await this.recordAnswering();
    if (late) await stopProcess(late);
    this.socket?.destroy();
    this.socket = undefined;
    this.settleAll();
  }

  // --- the process and the channel ---

  private ensure(): Promise<void> {
    if (this.socket) return Promise.resolve();
    if (this.detached) return Promise.reject(new Error("the control plane is stopping"));
    return (this.starting ??= this.connectOrSpawn().finally(() => (this.starting = undefined)));
  }

  private async connectOrSpawn(): Promise<void> {
    const path = socketPath(this.paths.home);
    const running =
      this.running ?? (this.orphans().length === 0 ? await this.recordAnswering() : undefined);
    if (running) {
      const socket = await connectTo(path, 2_000).catch(() => undefined);
      if (socket) {
        const hello = await greeting(socket);
        if (hello?.protocol === PROTOCOL) return this.attach(socket, hello, false);
        if (hello && hello.protocol >= HANDOVER_SINCE) {
          if (await this.handOver(socket, hello)) return;
        } else {
          socket.destroy();
          // Too old to hand over: replaced. SIGTERM closes its listeners and ends it in every
          // version, so the new one can take the ports.
          this.log(`gateway pid ${running.pid} speaks protocol ${hello?.protocol}: replacing it`);
        }
      } else this.log(`gateway pid ${running.pid} does not answer on its socket: replacing it`);
      await stopProcess(running);
    }
    // Its primary died (or was just killed: a wedged one ignores SIGTERM), and its workers
    // hold the listening sockets: their successor serves. Spawning one now would race it
    // for the socket and the ports.
    const orphans = this.orphans();
    if (orphans.length > 0) {
      const dead = this.recorded()!.pid;
      this.log(`gateway pid ${dead} died; its workers serve on: waiting for their successor`);
      const deadline = Date.now() + SUCCESSION_WAIT_MS;
      const waiting = successionPending(orphans, deadline);
      // Not while the control plane stops (`stop` ends the orphans, and their successor).
      if (await this.adoptSuccessor(dead, () => !this.detached && waiting())) return;
      if (this.detached) throw new Error("the control plane is stopping");
      // None answered: the orphans, still holding the ports, go for a new gateway.
      this.log(`no successor answered: ending the gateway's workers and starting a new one`);
      await Promise.all(this.orphans().map((w) => stopProcess(w)));
    }
    if (this.detached) throw new Error("the control plane is stopping");
    await this.spawnGateway();
  }

  /**
   * Records the gateway answering on the socket when none recorded lives, and returns it: the
   * successor that the workers of a primary that died while no control plane ran brought up
   * (it is recorded nowhere). Adopted as any running gateway: it keeps what it serves until
   * recovery is done — not taken for one this control plane started, which it would sync.
   */
  private async recordAnswering(): Promise<Recorded | undefined> {
    const hello = await helloAt(socketPath(this.paths.home));
    if (!hello) return undefined;
    this.record(hello);
    return this.running;
  }

  /** The recorded gateway's workers still alive (of a dead primary: orphans). */
  private orphans(): Proc[] {
    return (this.recorded()?.workers ?? []).filter((w) => isAlive(w.pid, w.startTime));
  }

  /**
   * Asks a gateway of another version (`hello`, over `socket`) to hand over to this caravan's,
   * and adopts that; false when it did not come up (the old one is then replaced).
   */
  private async handOver(socket: Socket, hello: Hello): Promise<boolean> {
    this.log(`gateway pid ${hello.pid} speaks protocol ${hello.protocol}: it hands over`);
    const { command, env } = await this.gatewayCommand();
    send(socket, { t: "handover", command, env });
    socket.end();
    const deadline = Date.now() + START_TIMEOUT_MS;
    return this.adoptSuccessor(hello.pid, handoverPending(hello, deadline));
  }

  /**
   * Connects to the successor of the gateway `predecessor` once it answers, while
   * `keepWaiting()`. One of another protocol (orphans of an older gateway spawn an older one)
   * is asked to hand over in turn.
   */
  private async adoptSuccessor(predecessor: number, keepWaiting: () => boolean): Promise<boolean> {
    let found: Socket | undefined;
    const probe = async () => {
      const socket = await connectTo(socketPath(this.paths.home), 1_000).catch(() => undefined);
      const hello = socket && (await greeting(socket));
      if (hello && hello.pid !== predecessor) found = socket;
      else socket?.destroy();
      return hello;
    };
    const hello = await awaitSuccessor(probe, predecessor, keepWaiting);
    if (!hello || !found) return false;
    this.log(`gateway pid ${hello.pid} succeeded pid ${predecessor}`);
    if (hello.protocol === PROTOCOL) {
      this.attach(found, hello, false);
      return true;
    }
    // Recorded: if it does not hand over, it is the one replaced.
    this.record(hello);
    if (hello.protocol >= HANDOVER_SINCE) return this.handOver(found, hello);
    found.destroy();
    return false;
  }

  /** How this caravan starts its gateway process. */
  private async gatewayCommand(): Promise<{ command: string[]; env: Record<string, string> }> {
    const main = await gatewayMain(this.paths.runtime);
    // Not the apps' environment (no CARAVAN_HOME_ID): it is no app, and no orphan to reap.
    const env: Record<string, string> = { CARAVAN_HOME: this.paths.home };
    for (const k of ["PATH", "HOME", "USER", "LANG", "TZ", "TMPDIR", "CARAVAN_GATEWAY_WORKERS"])
      if (process.env[k] !== undefined) env[k] = process.env[k];
    return { command: [process.execPath, "--enable-source-maps", main], env };
  }

  private async spawnGateway(): Promise<void> {
    // A home removed under this control plane (a finished `caravan serve`'s, a test's): a
    // gateway started now would make parts of it again (its runtime copy, its log) and so
    // never see it gone, serving on for no one.
    if (!existsSync(this.paths.db))
      throw new Error(`${this.paths.db} is gone (its home removed): no gateway is started for it`);
    const { command, env } = await this.gatewayCommand();
    const log = openSync(gatewayLog(this.paths.home), "a");
    let child;
    try {
      child = spawn(command[0]!, command.slice(1), {
        detached: true,
        stdio: ["ignore", log, log],
        env,
        cwd: this.paths.home,
      });
    } finally {
      closeSync(log); // the child has its own copy
    }
    child.unref();
    let exited = false;
    child.once("exit", () => (exited = true));
    child.once("error", () => (exited = true));
    if (child.pid === undefined) throw new Error(`the gateway could not be started`);
    const recorded = { pid: child.pid, startTime: processStartTime(child.pid) ?? "" };
    this.store.setMeta(GATEWAY_META, JSON.stringify(recorded));
    const deadline = Date.now() + START_TIMEOUT_MS;
    while (Date.now() < deadline && !exited) {
      const socket = await connectTo(socketPath(this.paths.home), 1_000).catch(() => undefined);
      if (socket) {
        const hello = await greeting(socket);
        // Another gateway of this home won a race to the socket: that one is adopted (attach),
        // and keeps what it serves (only the one started here has nothing of its own).
        if (hello?.protocol === PROTOCOL) {
          this.log(`gateway started, pid ${hello.pid}`);
          return this.attach(socket, hello, hello.pid === recorded.pid);
        }
        if (hello && hello.pid !== recorded.pid) this.record(hello);
        socket.destroy();
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    if (!exited) await stopProcess(recorded);
    throw new Error(`the gateway process did not start (see ${gatewayLog(this.paths.home)})`);
  }

  /** What a new control plane adopts: the primary that answered, and its workers. */
  private record(hello: Pick<Hello, "pid" | "startTime" | "workers">): void {
    const recorded: Recorded = {
      pid: hello.pid,
      startTime: hello.startTime,
      workers: hello.workers,
    };
    this.store.setMeta(GATEWAY_META, JSON.stringify(recorded));
  }

  private attach(socket: Socket, hello: Hello, fresh: boolean): void {
    // The workers now; a successor or a gateway that won a race to the socket is recorded —
    // also when let go of meanwhile: `stop` ends the recorded process (a successor too).
    const recorded = this.recorded();
    this.record(recorded?.pid === hello.pid ? { ...recorded, workers: hello.workers } : hello);
    // Let go of meanwhile (`detach`, `stop`): not attached; `stop` ends the process itself.
    if (this.detached) return void socket.end();
    send(socket, { t: "hello", protocol: PROTOCOL });
    this.socket = socket;
    this.connectedAt = Date.now();
    // A gateway this control plane started has nothing of its own to keep.
    if (fresh) this.synced = true;
    readMessages<FromGateway>(socket, (m) => this.onMessage(socket, m));
    socket.on("close", () => this.lost(socket));
    if (this.synced)
      void this.request({ t: "sync", routes: [...this.routes.values()] }).catch((e: Error) =>
        this.log(`gateway sync: ${e.message}`),
      );
  }

  private onMessage(socket: Socket, m: FromGateway): void {
    switch (m.t) {
      case "done":
        return this.pending.done(m);
      case "wake":
        void this.hooks.wake(m.app).then(
          () => send(socket, { t: "woken", id: m.id }),
          (e: Error) => send(socket, { t: "woken", id: m.id, error: e.message }),
        );
        return;
      case "report":
        this.report = m;
        for (const [app, span] of m.spans) this.hooks.recordSpan(app, span);
        return;
      case "workers": {
        const recorded = this.recorded();
        if (recorded) this.record({ ...recorded, workers: m.workers });
        return;
      }
      case "hello":
        return;
    }
  }

  /** The channel closed: unless we are letting go, the gateway comes back (or is reconnected). */
  private lost(socket: Socket): void {
    if (this.socket !== socket) return;
    this.socket = undefined;
    this.report = undefined;
    this.settleAll();
    if (this.detached) return;
    if (Date.now() - this.connectedAt >= STABLE_AFTER_MS) this.backoffMs = BACKOFF_FIRST_MS;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
    this.log(`lost the gateway; reconnecting or restarting it in ${delay} ms`);
    this.restartTimer = setTimeout(() => {
      this.ensure().catch((e: Error) => this.failed(e));
    }, delay);
  }

  private failed(e: Error): void {
    this.log(`gateway: ${e.message}`);
    if (this.detached || this.socket || this.retryPending) return;
    const delay = this.backoffMs;
    this.backoffMs = Math.min(BACKOFF_MAX_MS, this.backoffMs * 2);
    this.retryPending = true;
    this.restartTimer = setTimeout(() => {
      this.retryPending = false;
      this.ensure().catch((err: Error) => this.failed(err));
    }, delay);
  }

  /** Sends a message with an id and waits for its `done`; resolves at once with no gateway (the state is sent when it is back). */
  private request(message: WithoutId<ToGateway>): Promise<void> {
    const socket = this.socket;
    if (!socket) return Promise.resolve();
    const id = this.nextId++;
    // A gateway that does not answer is stuck (stopped, a worker hung): the channel is dropped,
    // which settles this and takes the lost-gateway path (reconnect, or replace it).
    const limitMs =
      REQUEST_TIMEOUT_MS +
      (message.t === "drain" ? message.graceMs : 0) +
      (message.t === "sync" ? message.routes.length * 100 : 0); // listeners to open
    const timer = setTimeout(() => {
      this.log(`the gateway did not answer a ${message.t} within ${limitMs} ms`);
      socket.destroy();
    }, limitMs);
    timer.unref();
    const answered = this.pending.wait(id).finally(() => clearTimeout(timer));
    send(socket, { ...message, id } as ToGateway);
    return answered;
  }

  private tell(message: ToGateway): void {
    if (this.socket) send(this.socket, message);
  }

  /** Whatever waits on a gateway that is gone is done: its listeners and requests went with it. */
  private settleAll(): void {
    this.pending.gone();
  }

  private recorded(): Recorded | undefined {
    try {
      return JSON.parse(this.store.getMeta(GATEWAY_META) ?? "") as Recorded;
    } catch {
      return undefined;
    }
  }

  private log(line: string): void {
    this.hooks.log?.(line);
  }
}

/**
 * The gateway's entry: beside this module when caravan runs compiled (dist/, the package);
 * from a checkout run through a TypeScript loader, compiled into the runtime bundle (which
 * needs esbuild, whose service would otherwise live on in the daemon).
 */
async function gatewayMain(runtimeDir: string): Promise<string> {
  const compiled = fileURLToPath(new URL("./main.js", import.meta.url));
  if (import.meta.url.endsWith(".js") && existsSync(compiled)) return compiled;
  return join(await buildRuntime(runtimeDir), `${GATEWAY_PROCESS_ENTRY}.js`);
}

/** SIGTERM (the gateway closes its listeners and exits), then SIGKILL after a wait. */
async function stopProcess(proc: Recorded): Promise<void> {
  const signal = (s: NodeJS.Signals) => {
    if (!isAlive(proc.pid, proc.startTime)) return;
    try {
      process.kill(proc.pid, s);
    } catch {
      /* gone */
    }
  };
  signal("SIGTERM");
  const deadline = Date.now() + EXIT_WAIT_MS;
  while (isAlive(proc.pid, proc.startTime) && Date.now() < deadline)
    await new Promise((r) => setTimeout(r, 20));
  signal("SIGKILL");
  while (isAlive(proc.pid, proc.startTime)) await new Promise((r) => setTimeout(r, 20));
}
