/**
 * How a gateway is succeeded without closing a listening socket: a process that holds them
 * spawns the successor with each socket inherited as a file descriptor (node can pass an fd to
 * no unrelated process), and gives it the whole state over IPC; the successor's workers accept
 * on the same sockets, and once it answers on the channel socket, the predecessor's workers
 * stop accepting, finish what is in flight and exit. Connections that arrive in between wait
 * in the sockets' queues: none is refused.
 *
 * Who spawns it: the primary itself, told to by a newer control plane (`Handover`); or, when
 * the primary died (SIGKILL), one of its orphaned workers, elected by a lock file created
 * exclusively in the home, one per primary and attempt (`elect`).
 */
import { spawn, type ChildProcess } from "node:child_process";
import {
  closeSync,
  linkSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { BACKOFF_FIRST_MS, BACKOFF_MAX_MS, STABLE_AFTER_MS } from "../crash-backoff.ts";
import { isAlive } from "../os.ts";
import { gatewayLog, type Hello, type Proc, type RouteState } from "./protocol.ts";

/**
 * The first fd of an inherited listening socket in the successor (0–2 stdio, 3 IPC). Stable
 * across versions, as `Succession` is: the successor may be of another one (see `Handover`).
 */
const FIRST_FD = 4;
/** How often a process waiting for a successor looks for one on the channel socket. */
export const POLL_MS = 20;

/**
 * What the spawner sends its successor first: the sockets (by fd) and the state to serve.
 * Stable across versions (see `Handover`): fields may be added, none removed or changed.
 */
export interface Succession {
  t: "succeed";
  listeners: { host: string; port: number; fd: number }[];
  routes: RouteState[];
}

/** Spawns `command` detached, with the listening sockets `listeners` (fds here) and `routes`. */
export function spawnSuccessor(
  command: string[],
  env: NodeJS.ProcessEnv,
  home: string,
  listeners: { host: string; port: number; fd: number }[],
  routes: RouteState[],
): ChildProcess {
  const [file, ...args] = command;
  if (!file) throw new Error("no command to hand over to");
  const log = openSync(gatewayLog(home), "a");
  let child: ChildProcess;
  try {
    child = spawn(file, args, {
      detached: true,
      stdio: ["ignore", log, log, "ipc", ...listeners.map((l) => l.fd)],
      env,
      cwd: home,
    });
  } finally {
    closeSync(log); // the child has its own copy; one that was never spawned must not leak it
  }
  const message: Succession = {
    t: "succeed",
    listeners: listeners.map((l, i) => ({ host: l.host, port: l.port, fd: FIRST_FD + i })),
    routes,
  };
  child.on("error", () => {});
  child.send(message, () => {});
  child.unref();
  return child;
}

/** In a gateway's primary: what its spawner handed it, when it was spawned as a successor. */
export function inheritance(): Promise<Succession | undefined> {
  if (!process.send) return Promise.resolve(undefined);
  return new Promise((resolve) => {
    process.once("message", (m: Succession) => {
      // Nothing else comes over it: the spawner may exit (an orphaned worker retires). Not
      // in this handler: node goes on using the channel after emitting a pending message.
      setImmediate(() => process.connected && process.disconnect());
      resolve(m.t === "succeed" ? m : undefined);
    });
    process.once("disconnect", () => resolve(undefined));
  });
}

/** An election's file: `gateway.successor-<predecessor pid>-<attempt>`. */
const electionFile = /^gateway\.successor-\d+-\d+$/;

/**
 * Whether `self` is the one to spawn the successor of the primary `predecessor` (`attempt`:
 * 0, then one more each time the elected one died before its successor answered). The file
 * is made whole under a name of its own, then linked to the election's name: exactly one
 * link succeeds, and a reader never sees it half written. Otherwise: who was elected.
 */
export function elect(
  home: string,
  predecessor: number,
  attempt: number,
  self: Proc,
): { elected: true } | { elected: false; holder: Proc } {
  const file = join(home, `gateway.successor-${predecessor}-${attempt}`);
  const mine = candidateFile(home, self.pid);
  writeFileSync(mine, JSON.stringify(self));
  try {
    linkSync(mine, file);
    return { elected: true };
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
    return { elected: false, holder: JSON.parse(readFileSync(file, "utf8")) as Proc };
  } finally {
    rmSync(mine, { force: true });
  }
}

/**
 * Where an orphan writes its vote before linking it: not an election's name, so that a
 * successor clearing those leaves it to its writer (whose link would fail otherwise).
 */
export const candidateFile = (home: string, pid: number) => join(home, `.gateway.candidate-${pid}`);

/** The elected one is gone (pid reused or not): the next attempt is open. */
export const stale = (holder: Proc) => !isAlive(holder.pid, holder.startTime);

/** Removes the election files (the successor does, once it answers). */
export function clearElections(home: string): void {
  for (const name of readdirSync(home))
    if (electionFile.test(name)) rmSync(join(home, name), { force: true });
}

/**
 * While a dead primary's workers may still spawn its successor: some of `orphans` is alive
 * (pid and start time: a pid may have been reused), until `deadline`.
 */
export function successionPending(
  orphans: Proc[],
  deadline: number,
  alive: (p: Proc) => boolean = (p) => isAlive(p.pid, p.startTime),
): () => boolean {
  return () => Date.now() < deadline && orphans.some(alive);
}

/**
 * While a gateway asked to hand over (`predecessor`) may still bring up its successor: it is
 * alive (it exits when the successor failed to start: nothing is left to wait for), until
 * `deadline`; and `graceMs` after it is seen gone: it also exits once its successor answers.
 */
export function handoverPending(
  predecessor: Proc,
  deadline: number,
  alive: (p: Proc) => boolean = (p) => isAlive(p.pid, p.startTime),
  graceMs = 1_000,
): () => boolean {
  let goneAt: number | undefined;
  return () => {
    const now = Date.now();
    if (now >= deadline) return false;
    if (alive(predecessor)) return true;
    goneAt ??= now;
    return now - goneAt <= graceMs;
  };
}

/**
 * Waits for a gateway other than `predecessor` to answer (`probe`: the hello on the channel
 * socket, if any) for as long as `keepWaiting()`; its hello, or undefined once not.
 */
export async function awaitSuccessor(
  probe: () => Promise<Hello | undefined>,
  predecessor: number,
  keepWaiting: () => boolean,
): Promise<Hello | undefined> {
  for (;;) {
    const hello = await probe();
    if (hello && hello.pid !== predecessor) return hello;
    if (!keepWaiting()) return undefined;
    await new Promise((r) => setTimeout(r, POLL_MS));
  }
}

/** Set by a primary for its workers: when it started (ms since the epoch). */
export const PRIMARY_SINCE_ENV = "CARAVAN_GATEWAY_PRIMARY_SINCE";
/** Handed by orphans to the successor of a primary that died young: the next such wait. */
export const SUCCESSION_BACKOFF_ENV = "CARAVAN_GATEWAY_SUCCESSION_BACKOFF_MS";

/**
 * The crash backoff, for successions (a primary that keeps dying soon after it answers must
 * not be succeeded every half second): how long orphans wait before they elect, from how long
 * their primary lived (`env`: a worker's), and the wait to hand its successor (undefined: none).
 */
export function successionBackoff(
  env: NodeJS.ProcessEnv,
  now: number,
): { delayMs: number; next: string | undefined } {
  const lived = now - Number(env[PRIMARY_SINCE_ENV]);
  if (!(lived < STABLE_AFTER_MS)) return { delayMs: 0, next: undefined }; // stable, or unknown
  const delayMs = Number(env[SUCCESSION_BACKOFF_ENV]) || BACKOFF_FIRST_MS;
  return { delayMs, next: String(Math.min(BACKOFF_MAX_MS, delayMs * 2)) };
}

/**
 * How long a successor told to stop (SIGTERM) may take to exit before its orphan kills it:
 * under the 5 s a control plane gives the orphan itself (client.ts, EXIT_WAIT_MS).
 */
const SUCCESSOR_EXIT_WAIT_MS = 4_000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** After this many successors that died before answering, orphans wait for a control plane. */
const MAX_ATTEMPTS = 3;

/** An orphaned worker's part in its primary's succession (`succeed`). */
export interface SuccessionRun {
  /** The successor's hello, once one answers (the worker then retires); never when none does. */
  answered: Promise<Hello>;
  /**
   * Stops taking part (the worker is ending: SIGTERM, from `server stop` or a control plane
   * that gave up waiting), and ends a successor it spawned that is not the one answering;
   * resolves once that is gone (the worker exits then, not before).
   */
  end(): Promise<void>;
}

/**
 * An orphaned worker (its primary died): serves on while the workers elect one of them to
 * spawn a successor; `answered` once a successor answers, and never when none does (a control
 * plane then ends the orphans and starts a gateway).
 */
export function succeed(o: {
  home: string;
  socket: string;
  predecessor: number;
  self: Proc;
  /** What to spawn, and with what, when elected: asked then (the latest state). */
  successor: () => {
    command: string[];
    env: NodeJS.ProcessEnv;
    listeners: { host: string; port: number; fd: number }[];
    routes: RouteState[];
  };
  log: (line: string) => void;
  probe: (path: string) => Promise<Hello | undefined>;
  /** How long to serve on before electing (`successionBackoff`). */
  delayMs?: number;
}): SuccessionRun {
  const electFrom = Date.now() + (o.delayMs ?? 0);
  let attempt = 0;
  let spawned: { attempt: number; child?: ChildProcess; exited: boolean } | undefined;
  let ended = false;
  /** The pid of the gateway that answered, once one has. */
  let answeredBy: number | undefined;
  /**
   * Ends the successor it spawned unless that is the gateway answering: one that has not
   * answered would otherwise come up afterwards (or beside another) and serve the ports on,
   * with no one to stop it. Resolves once it is gone: until then it (and its workers) hold the
   * listening sockets, which a gateway the control plane starts next must bind.
   */
  const endOwn = async () => {
    const own = spawned;
    if (!own?.child || own.exited || own.child.pid === answeredBy) return;
    own.child.kill("SIGTERM");
    const deadline = Date.now() + SUCCESSOR_EXIT_WAIT_MS;
    while (!own.exited && Date.now() < deadline) await sleep(POLL_MS);
    if (!own.exited) own.child.kill("SIGKILL");
    while (!own.exited) await sleep(POLL_MS);
  };
  /** Takes part in the election `attempt`, spawns if elected; the attempt to look at next. */
  const vote = (attempt: number): number => {
    const result = elect(o.home, o.predecessor, attempt, o.self);
    if (result.elected && spawned?.attempt !== attempt) {
      // Counted as a successor that died until spawned: a spawn that throws opens the next attempt.
      const mine: NonNullable<typeof spawned> = { attempt, exited: true };
      spawned = mine;
      const s = o.successor();
      const child = spawnSuccessor(s.command, s.env, o.home, s.listeners, s.routes);
      mine.child = child;
      mine.exited = false;
      child.once("exit", () => (mine.exited = true));
      o.log(`the primary died: spawned its successor, pid ${child.pid} (attempt ${attempt})`);
      return attempt;
    }
    // Its own successor died before answering, or the elected one died: the next attempt.
    // (Polled again, the election names this worker as its holder: never stale to itself.)
    const own = result.elected || result.holder.pid === o.self.pid;
    const failed = own ? spawned?.attempt === attempt && spawned.exited : stale(result.holder);
    return failed ? attempt + 1 : attempt;
  };
  const run = async (): Promise<Hello> => {
    for (;;) {
      const hello = await o.probe(o.socket);
      if (hello && hello.pid !== o.predecessor) {
        // Another gateway may have answered first (a second election's successor).
        answeredBy = hello.pid;
        await endOwn();
        return hello;
      }
      if (ended) return new Promise<never>(() => {});
      try {
        if (attempt < MAX_ATTEMPTS && Date.now() >= electFrom) attempt = vote(attempt);
      } catch (e) {
        // The home removed (it then exits), or the election cleared under it by a successor
        // that answers now: looked at again. An orphan must not die of it, with its connections.
        o.log(`electing a successor: ${(e as Error).message}`);
      }
      await sleep(POLL_MS);
    }
  };
  return {
    answered: run(),
    end: () => {
      ended = true;
      return endOwn();
    },
  };
}
