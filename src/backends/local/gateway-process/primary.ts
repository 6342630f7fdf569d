/**
 * The gateway process's primary: it holds the channel to the control plane (protocol.ts),
 * the state the control plane gave it (routes, options, replicas), the listening sockets
 * (listeners.ts), and forks the workers that serve (worker.ts). It binds each listening socket
 * once and hands it to every worker, which accept for themselves (no connection passes
 * through the primary). A worker that dies costs only its own connections: the others keep
 * accepting on the same sockets (a single worker's standby starts to), and a new worker is
 * forked and given the whole state. A primary that dies costs nothing: its workers serve on
 * and see to its succession; a newer control plane has it hand over to a newer gateway
 * (succession.ts).
 *
 * The primary passes each operation on to every worker and answers once all have; it adds up
 * their reports (aggregate.ts) and batches their spans for the control plane, and turns their
 * wake requests into one per app for the control plane.
 */
import { fork as forkProcess, type ChildProcess } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import type { GatewaySpan } from "../../gateway/index.ts";
import { HOME_CHECK_MS, type HomePaths } from "../home.ts";
import { processStartTime } from "../os.ts";
import { merge, retire, type Retired, type WorkerApp } from "./aggregate.ts";
import { Listeners } from "./listeners.ts";
import {
  MAX_SPANS_PER_REPORT,
  PROTOCOL,
  PendingRequests,
  REPORT_EVERY_MS,
  STANDBY_ENV,
  WORKER_ENV,
  helloAt,
  readMessages,
  send,
  socketPath,
  type FromWorker,
  type Handover,
  type Proc,
  type ToGateway,
  type ToWorker,
} from "./protocol.ts";
import { applyToRoutes, portsInUse, type Routes } from "./routes.ts";
import {
  PRIMARY_SINCE_ENV,
  awaitSuccessor,
  clearElections,
  spawnSuccessor,
  type Succession,
} from "./succession.ts";
import { BACKOFF_FIRST_MS, BACKOFF_MAX_MS, STABLE_AFTER_MS } from "../crash-backoff.ts";

/** Why a request for an app with no replica gets 503 while no control plane is connected. */
export const NO_CONTROL_PLANE =
  "the control plane is not running, and only it starts apps: any caravan command (e.g. caravan server start) starts it";
/**
 * Why a request for an app with no replica gets 503 while its worker is orphaned (the primary
 * died; its successor, which asks the control plane, answers within about half a second, or
 * up to 30 s when primaries keep dying young: `successionBackoff`).
 */
export const SUCCESSION_PENDING =
  "the gateway is restarting (its primary exited) and cannot start the app right now: try again in a moment";
/**
 * A periodic report is skipped while this much is still unsent to the control plane (one that
 * reads slowly, or not at all): its spans are counted as dropped, the next report has the
 * figures as they are then.
 */
export const REPORT_BACKLOG_BYTES = 1 << 20;
/** How long a successor may take to answer on the channel socket before the handover fails. */
const HANDOVER_TIMEOUT_MS = 15_000;

/**
 * Workers when `CARAVAN_GATEWAY_WORKERS` does not say: one core is left to the apps behind the
 * gateway and whatever calls them (at most 4 workers). On 2 cores two workers competing with
 * the app and the load for the same cores cost ~30 % more CPU per request and ~1.5× the p99 of
 * one (bench/RESULTS.md, "One gateway worker on two cores"). A single worker has a standby
 * (`STANDBY_ENV`: it costs memory, no CPU): should it die, the standby accepts at once,
 * instead of new connections waiting in the sockets' queues for a new process to start.
 */
export function defaultWorkers(cores: number): number {
  return Math.max(1, Math.min(4, cores - 1));
}

type WithoutId<T> = T extends { id: number } ? Omit<T, "id"> : never;

interface WorkerSlot {
  worker: ChildProcess;
  /** Given the state and taking operations. */
  ready: boolean;
  startedAt: number;
  latest: Record<string, WorkerApp>;
  pending: PendingRequests;
  /** Synced, holding the sockets, accepting on none until told (`accept`). */
  standby: boolean;
}

/**
 * `inherited`: it succeeds another gateway, whose listening sockets and state it was handed.
 */
export async function runPrimary(
  paths: HomePaths,
  workerCount: number,
  inherited?: Succession,
): Promise<void> {
  const startedAt = Date.now();
  const log = (line: string) =>
    process.stderr.write(`[gateway ${process.pid}] ${new Date().toISOString()} ${line}\n`);
  const routes: Routes = new Map();
  const listeners = new Listeners();
  /** By pid. */
  const slots = new Map<number, WorkerSlot>();
  /** The counters of workers that exited, per app: kept in the sum (see aggregate.ts). */
  const retired: Retired = new Map();
  /** An app closed is counted from zero if opened again (as its workers' own counts are). */
  const forgetClosed = () => {
    for (const app of retired.keys()) if (!routes.has(app)) retired.delete(app);
  };
  let nextId = 1;
  let controlPlane: Socket | undefined;
  let spans: [string, GatewaySpan][] = [];
  let spansDropped = 0;
  /** One control-plane wake per app, with the workers' requests waiting on it. */
  const waking = new Map<string, { slot: WorkerSlot; id: number }[]>();
  /** The control plane's wakes in progress, by id: the app, and the connection asked over. */
  const cpWakes = new Map<number, { app: string; socket: Socket }>();
  /** A worker that dies is replaced at once; one that died young waits (the crash backoff). */
  let respawnDelay = BACKOFF_FIRST_MS;
  let exiting = false;
  /** The channel socket is its successor's now (a handover). */
  let handedOver = false;

  // --- workers ---

  const toWorker = (slot: WorkerSlot, m: ToWorker): boolean =>
    sendToWorker(slot.worker, m, (e) =>
      log(`sending ${m.t} to worker ${slot.worker.pid}: ${e.message}`),
    );
  const ask = (slot: WorkerSlot, m: WithoutId<ToWorker>): Promise<void> => {
    const id = nextId++;
    // A dying worker's share goes with it, as when it exits with the operation pending.
    if (!slot.ready || !toWorker(slot, { ...m, id } as ToWorker)) return Promise.resolve();
    return slot.pending.wait(id);
  };
  /** An operation every ready worker does; the first error (if any) is the answer's. */
  const everyWorker = async (m: WithoutId<ToWorker>): Promise<void> => {
    const results = await Promise.allSettled(
      [...slots.values()].filter((s) => s.ready).map((s) => ask(s, m)),
    );
    const failed = results.find((r) => r.status === "rejected");
    if (failed) throw failed.reason;
  };
  const broadcast = (m: ToWorker) => {
    for (const s of slots.values()) if (s.ready) toWorker(s, m);
  };

  /** The workers now, for the control plane: they outlive this process. */
  const workers = (): Proc[] =>
    [...slots.values()].flatMap((s) =>
      s.worker.pid === undefined
        ? []
        : [{ pid: s.worker.pid, startTime: processStartTime(s.worker.pid) ?? "" }],
    );
  const workersChanged = () =>
    controlPlane && send(controlPlane, { t: "workers", workers: workers() });

  /** Resolves once the worker serves the whole state (or has exited). */
  const fork = (standby = false): Promise<void> => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      // Told how many they are: each sends its share of the spans a report may carry.
      // And when it started: should it die young, they throttle its succession.
      CARAVAN_GATEWAY_WORKERS: String(workerCount),
      [WORKER_ENV]: "1",
      [PRIMARY_SINCE_ENV]: String(startedAt),
    };
    if (standby) env[STANDBY_ENV] = "1";
    else delete env[STANDBY_ENV];
    const worker = forkProcess(process.argv[1] ?? "", [], { env });
    // A send that races the channel's closing, or a fork that failed, must not become an
    // uncaught 'error' (which would end the primary, and every listener with it).
    worker.on("error", (e) => log(`worker ${worker.pid ?? "(not started)"}: ${e.message}`));
    if (worker.pid === undefined) {
      // No 'exit' need follow a fork that failed (EAGAIN, EMFILE): tried again, backing off.
      const delay = respawnDelay;
      respawnDelay = Math.min(BACKOFF_MAX_MS, respawnDelay * 2);
      setTimeout(() => exiting || void fork(standby), delay);
      return Promise.resolve();
    }
    const slot: WorkerSlot = {
      worker,
      ready: false,
      startedAt: Date.now(),
      latest: {},
      pending: new PendingRequests(),
      standby,
    };
    slots.set(worker.pid, slot);
    let synced = () => {};
    const serving = new Promise<void>((resolve) => (synced = resolve));
    worker.on("message", (m: FromWorker) => {
      fromWorker(slot, m);
      if (m.t !== "ready") return;
      // The whole state first; operations after it reach it in order.
      slot.ready = true;
      void ask(slot, { t: "sync", routes: [...routes.values()] })
        .then(() => slot.standby && log(`standby ${worker.pid} synced`))
        .catch((e: Error) => log(`worker ${worker.pid}: ${e.message}`))
        .finally(() => {
          // After the sync, in order: a respawned worker of a primary that serves.
          if (channel.listening) toWorker(slot, { t: "serving" });
          synced();
          workersChanged();
        });
    });
    // Its channel closes a little before it exits: from then on it takes nothing.
    worker.on("disconnect", () => {
      slot.ready = false;
      slot.pending.gone();
    });
    worker.on("exit", (code, signal) => {
      slots.delete(worker.pid!);
      synced();
      retire(retired, slot.latest);
      slot.latest = {};
      slot.pending.gone();
      for (const [app, waiters] of waking)
        waking.set(
          app,
          waiters.filter((w) => w.slot !== slot),
        );
      if (exiting) return;
      workersChanged();
      // A standby takes the dead worker's place at once; the new one stands by instead.
      let replacement = slot.standby ? "standby" : "worker";
      const spare = slot.standby
        ? undefined
        : [...slots.values()].find((s) => s.standby && s.ready);
      if (spare && toWorker(spare, { t: "accept" })) {
        spare.standby = false;
        spare.startedAt = Date.now(); // a crash soon after it took over is a young one's
        replacement = "standby";
        log(`worker ${worker.pid} exited: its standby ${spare.worker.pid} accepts`);
      }
      const young = Date.now() - slot.startedAt < STABLE_AFTER_MS;
      const delay = young ? respawnDelay : 0;
      respawnDelay = young ? Math.min(BACKOFF_MAX_MS, respawnDelay * 2) : BACKOFF_FIRST_MS;
      log(`worker ${worker.pid} exited (${signal ?? code}); a new ${replacement} in ${delay} ms`);
      setTimeout(() => exiting || void fork(replacement === "standby"), delay);
    });
    return serving;
  };

  const fromWorker = (slot: WorkerSlot, m: FromWorker) => {
    switch (m.t) {
      case "ready":
        return; // see fork
      case "listen": {
        let socket;
        try {
          socket = listeners.get(m.host, m.port);
        } catch (e) {
          return void toWorker(slot, { t: "listener", id: m.id, error: (e as Error).message });
        }
        if (slot.worker.connected)
          slot.worker.send({ t: "listener", id: m.id }, socket as never, (e) => {
            if (e) log(`sending a listener to worker ${slot.worker.pid}: ${e.message}`);
          });
        return;
      }
      case "done":
        return slot.pending.done(m);
      case "report":
        slot.latest = m.apps;
        for (const s of m.spans)
          if (spans.length < MAX_SPANS_PER_REPORT) spans.push(s);
          else spansDropped++;
        spansDropped += m.spansDropped;
        return;
      case "wake":
        return wake(slot, m.id, m.app);
    }
  };

  const wake = (slot: WorkerSlot, id: number, app: string) => {
    if (!controlPlane) {
      toWorker(slot, { t: "woken", id, error: NO_CONTROL_PLANE });
      return;
    }
    const waiters = waking.get(app);
    if (waiters) return void waiters.push({ slot, id });
    waking.set(app, [{ slot, id }]);
    const cpId = nextId++;
    cpWakes.set(cpId, { app, socket: controlPlane });
    send(controlPlane, { t: "wake", id: cpId, app });
  };
  const woken = (app: string, error?: string) => {
    const waiters = waking.get(app) ?? [];
    waking.delete(app);
    for (const w of waiters) toWorker(w.slot, { t: "woken", id: w.id, error });
  };

  // --- the control plane ---

  /** `asked`: the control plane asked for it (status, /metrics), sent whatever the backlog. */
  const report = (asked = false) => {
    if (!controlPlane) {
      spans = [];
      spansDropped = 0;
      return;
    }
    if (!asked && controlPlane.writableLength > REPORT_BACKLOG_BYTES) {
      spansDropped += spans.length;
      spans = [];
      return;
    }
    const merged = merge(
      [...slots.values()].map((s) => s.latest),
      routes.keys(),
      retired,
    );
    send(controlPlane, { t: "report", ...merged, spans, spansDropped });
    spans = [];
    spansDropped = 0;
  };

  const handle = async (socket: Socket, m: ToGateway): Promise<void> => {
    const done = async (id: number, work: () => Promise<void> | void) => {
      try {
        await work();
        send(socket, { t: "done", id });
      } catch (e) {
        send(socket, { t: "done", id, error: (e as Error).message });
      }
    };
    if (m.t !== "hello" && m.t !== "handover") applyToRoutes(routes, m);
    /** Sockets no route uses any more are closed once the workers closed theirs. */
    const released = <T>(work: Promise<T>) =>
      work.finally(() => {
        forgetClosed();
        listeners.release(portsInUse(routes));
      });
    switch (m.t) {
      case "open":
        return done(m.id, () =>
          released(
            everyWorker({ t: "open", app: m.app, ports: m.ports, options: m.options }).catch(
              async (e) => {
                routes.delete(m.app);
                await everyWorker({ t: "close", app: m.app }).catch(() => {});
                throw e;
              },
            ),
          ),
        );
      case "close":
        return done(m.id, () => released(everyWorker({ t: "close", app: m.app })));
      case "options":
      case "replica":
        return broadcast(m);
      case "drain":
        return done(m.id, () =>
          everyWorker({ t: "drain", app: m.app, replica: m.replica, graceMs: m.graceMs }),
        );
      case "sync":
        return done(m.id, () => released(everyWorker({ t: "sync", routes: m.routes })));
      case "tokens":
        return done(m.id, () => everyWorker({ t: "tokens" }));
      case "report":
        return done(m.id, async () => {
          await everyWorker({ t: "report" });
          report(true);
        });
      case "woken": {
        const asked = cpWakes.get(m.id);
        if (asked?.socket !== socket) return;
        cpWakes.delete(m.id);
        return woken(asked.app, m.error);
      }
      case "exit":
        await stopWorkers();
        send(socket, { t: "done", id: m.id });
        return exit("told to by the control plane");
      case "hello":
      case "handover":
        return;
    }
  };

  /**
   * A control-plane connection is gone (closed, or replaced by a newer one): the wakes asked
   * over it will never be answered, so the requests waiting on them fail now, and a later
   * request for those apps asks again (over the connection there is then, if any).
   */
  const disconnected = (socket: Socket, why: string) => {
    if (controlPlane === socket) controlPlane = undefined;
    for (const [cpId, asked] of cpWakes) {
      if (asked.socket !== socket) continue;
      cpWakes.delete(cpId);
      woken(asked.app, why);
    }
  };

  const connected = (socket: Socket) => {
    send(socket, {
      t: "hello",
      protocol: PROTOCOL,
      pid: process.pid,
      startTime: processStartTime(process.pid) ?? "",
      build: dirname(process.argv[1] ?? ""),
      workers: workers(),
    });
    let greeted = false;
    readMessages<ToGateway>(socket, (m) => {
      if (!greeted) {
        // The stable message: understood whatever protocol the control plane speaks.
        // A handover that fails to start (a removed home, a command that cannot be spawned)
        // must not end this primary on an unhandled rejection: it exits the way a failed one does.
        if (m.t === "handover")
          return void handOver(m).catch((e: Error) => exit(`the handover failed: ${e.message}`));
        if (m.t !== "hello" || m.protocol !== PROTOCOL) return socket.destroy();
        greeted = true;
        // One control plane at a time: the newest (a restarted one) replaces a wedged one.
        if (controlPlane && controlPlane !== socket) {
          const old = controlPlane;
          disconnected(old, "the control plane was replaced while starting the app: try again");
          old.destroy();
        }
        controlPlane = socket;
        log("control plane connected");
        return;
      }
      void handle(socket, m).catch((e: Error) => log(`handling ${m.t}: ${e.stack ?? e.message}`));
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      if (controlPlane === socket)
        log("control plane disconnected; serving on from what it last sent");
      disconnected(socket, `${NO_CONTROL_PLANE} (it stopped while starting the app)`);
    });
  };

  // --- life cycle ---

  const channel: Server = createServer(connected);
  /** `how`: `exit` closes their listeners; `retire` lets their connections finish. */
  const stopWorkers = async (how: "exit" | "retire" = "exit") => {
    exiting = true;
    await Promise.allSettled(
      [...slots.values()].map(
        (s) =>
          new Promise<void>((resolve) => {
            if (s.worker.exitCode !== null || s.worker.signalCode !== null) return resolve();
            s.worker.once("exit", () => resolve());
            toWorker(s, how === "exit" ? { t: "exit", id: nextId++ } : { t: "retire" });
            // A retiring worker bounds its own wait (its connections' grace).
            if (how === "exit") setTimeout(() => s.worker.kill("SIGKILL"), 5_000).unref();
          }),
      ),
    );
  };
  const exit = async (why: string): Promise<never> => {
    log(`exiting: ${why}`);
    await stopWorkers();
    // Not yet listening (told to stop while starting): the socket is another gateway's, if any.
    const listening = channel.listening;
    channel.close();
    // After a handover the socket is the successor's.
    if (listening && !handedOver) rmSync(socketPath(paths.home), { force: true });
    process.exit(0);
  };

  /**
   * A newer control plane's `Handover`: its gateway is spawned with every listening socket
   * and the state, and once it answers on the channel socket (given up to it now), the
   * workers here retire. If it never answers, this one exits (the control plane then starts
   * a gateway the old way).
   */
  const handOver = async (m: Handover) => {
    if (handedOver) return;
    handedOver = true;
    log(`handing over to ${m.command.join(" ")}`);
    // Not awaited: that waits for every connection, and a wedged control plane keeps one.
    channel.close();
    rmSync(path, { force: true });
    const child = spawnSuccessor(m.command, m.env, paths.home, listeners.all(), [
      ...routes.values(),
    ]);
    let exited = false;
    child.once("exit", () => (exited = true));
    const deadline = Date.now() + HANDOVER_TIMEOUT_MS;
    const hello = await awaitSuccessor(
      () => helloAt(path),
      process.pid,
      () => !exited && Date.now() < deadline,
    );
    if (!hello) {
      if (!exited) child.kill("SIGKILL");
      return exit("its successor did not answer");
    }
    log(`its successor (pid ${hello.pid}) answers: the workers retire`);
    await stopWorkers("retire");
    process.exit(0);
  };

  const path = socketPath(paths.home);
  // From the start: a successor stopped while it starts (its spawner's `server stop`) ends
  // the workers it forked so far, which would otherwise serve on as orphans.
  process.on("SIGTERM", () => handedOver || void exit("SIGTERM"));
  process.on("SIGINT", () => handedOver || void exit("SIGINT"));
  // Never two gateways for one home: the second leaves.
  if (await answering(path)) {
    log("another gateway already serves this home");
    process.exit(0);
  }
  if (inherited) {
    for (const l of inherited.listeners) listeners.adopt(l.host, l.port, l.fd);
    for (const r of inherited.routes) routes.set(r.app, r);
    log(`succeeding a gateway: ${inherited.listeners.length} listening sockets inherited`);
  }
  // Each worker accepts on the shared sockets itself (round-robin through the primary would
  // put every connection through this one process). The control plane can connect (and the
  // predecessor's workers retire) once they all serve.
  await Promise.all(Array.from({ length: workerCount }, () => fork()));
  if (exiting) return; // stopped while starting (`exit` ends the process)
  // Asked again just before taking the socket: another successor (of another election) may
  // have started meanwhile. Its workers, forked here, end with their listeners' copies.
  if (await answering(path)) return void exit("another gateway already serves this home");
  rmSync(path, { force: true });
  const umask = process.umask(0o177); // the socket is created 0600: only the home's owner
  try {
    await new Promise<void>((resolve, reject) => {
      channel.once("error", reject);
      channel.listen(path, resolve);
    });
  } finally {
    process.umask(umask);
  }
  // Its own succession's, and any an earlier one left (orphans a control plane ended before
  // their successor answered): left, they would count against a reused pid's attempts.
  clearElections(paths.home);
  broadcast({ t: "serving" });
  // Forked once this gateway serves, so that it does not slow its start.
  if (workerCount === 1) void fork(true);
  setInterval(() => report(), REPORT_EVERY_MS);
  // A removed home (a finished `caravan serve`, a test's temporary home): nothing to serve.
  setInterval(
    () => existsSync(paths.home) || handedOver || void exit("its home was removed"),
    HOME_CHECK_MS,
  );
  log(`listening on ${path}, ${workerCount} workers`);
}

/**
 * Sends to a worker unless its channel has closed (it is exiting: 'disconnect' comes a little
 * before 'exit'). A failed send goes to `failed`, never to the worker's 'error' event. False
 * when nothing was sent.
 */
export function sendToWorker(
  worker: Pick<ChildProcess, "connected" | "send">,
  m: ToWorker,
  failed: (e: Error) => void,
): boolean {
  if (!worker.connected) return false;
  worker.send(m, (e) => e && failed(e));
  return true;
}

/** True when another gateway of this home answers on the socket. */
function answering(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}
