/**
 * The channel between the local control plane and its gateway process: newline-delimited
 * JSON over a unix socket in the caravan home (mode 0600). The gateway listens, the control
 * plane connects; each side first sends a `hello` with `PROTOCOL`. A control plane that finds
 * a gateway speaking another version asks it to hand over to its own (`handover`, the one
 * message every version understands), or replaces it when it is too old to (see client.ts).
 */
import { createHash } from "node:crypto";
import { lstatSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createConnection, type Socket } from "node:net";
import type { AppLoad, AppStats, GatewaySpan, Replica, RouteOptions } from "../../gateway/index.ts";
import type { WorkerApp } from "./aggregate.ts";

/**
 * Bumped when a message changes meaning; both sides refuse to talk across versions, except for
 * `Handover`. 2: the gateway hands over (`Handover`) and its workers outlive its primary.
 */
export const PROTOCOL = 2;

/**
 * The one stable message: every gateway from protocol 2 on understands it whatever the
 * control plane's protocol, sent instead of a `hello`, and it must never change meaning. The
 * gateway spawns `command` (argv, `command[0]` the executable) with `env`, hands it every
 * listening socket and its state (succession.ts), and once it answers on the socket, its own
 * workers stop accepting, finish what is in flight and exit: no connection is refused.
 *
 * What a gateway hands its successor is just as stable, since the successor may be of any
 * later version: the inherited listening sockets as fds 4, 5, … and the `succeed` message
 * (succession.ts: `Succession`, with `RouteState` and the `RouteOptions` in it) — fields may
 * be added (a successor defaults what an older gateway leaves out), none removed or changed.
 */
export interface Handover {
  t: "handover";
  command: string[];
  env: Record<string, string>;
}

/** A process by pid and kernel start time (a pid alone may have been reused). */
export interface Proc {
  pid: number;
  startTime: string;
}

export interface Ports {
  public: number;
  internal: number;
}

/**
 * One app as the control plane wants it served (a whole-state `sync` lists every one). Also in
 * a `succeed` message to a successor of another version: only to be added to (see `Handover`).
 */
export interface RouteState {
  app: string;
  ports: Ports;
  options: RouteOptions;
  replicas: Replica[];
}

/** Control plane → gateway. Messages with an `id` are answered by a `done` with that id. */
export type ToGateway =
  | { t: "hello"; protocol: number }
  | Handover
  | { t: "open"; id: number; app: string; ports: Ports; options: RouteOptions }
  | { t: "close"; id: number; app: string }
  | { t: "options"; app: string; options: RouteOptions }
  | { t: "replica"; app: string; replica: Replica }
  | { t: "drain"; id: number; app: string; replica: string; graceMs: number }
  /** The whole state: routes not listed are closed, replicas not listed drain. */
  | { t: "sync"; id: number; routes: RouteState[] }
  | { t: "woken"; id: number; error?: string }
  /** Tokens were created or revoked: verified values are checked in the database again. */
  | { t: "tokens"; id: number }
  /** A report now (before its `done`): `status` and `/metrics` show up-to-date figures. */
  | { t: "report"; id: number }
  /** Close every listener and exit (answered first): `server stop`, or a replacement. */
  | { t: "exit"; id: number };

/** What the gateway reports of an app, every `REPORT_EVERY_MS`. */
export interface AppReport {
  load: AppLoad;
  stats: AppStats;
}

/** Gateway → control plane. */
export type FromGateway =
  /** `build`: where its code runs from (a content-addressed runtime directory). */
  | {
      t: "hello";
      protocol: number;
      pid: number;
      startTime: string;
      build: string;
      /** Its workers: they serve on after the primary dies, until its successor answers. */
      workers: Proc[];
    }
  /** Its workers changed (one died and was replaced). */
  | { t: "workers"; workers: Proc[] }
  | { t: "done"; id: number; error?: string }
  | { t: "wake"; id: number; app: string }
  | {
      t: "report";
      apps: Record<string, AppReport>;
      /** Prometheus text of every app's traffic. */
      metrics: string;
      /** Spans of forwarded requests since the last report, as [app, span]. */
      spans: [string, GatewaySpan][];
      /** Spans left out since the last report (more than `MAX_SPANS_PER_REPORT`). */
      spansDropped: number;
    };

/**
 * Inside the gateway: its primary (which holds the channel and the listening sockets) and its
 * workers (which accept on those sockets), over the IPC channel of `child_process.fork`. The
 * primary passes the control plane's operations on with ids of its own, and sends a worker
 * the listening socket it asks for (`listener`, with the handle attached).
 */
export type ToWorker =
  | Exclude<ToGateway, { t: "hello" } | Handover>
  | { t: "listener"; id: number; error?: string }
  /** A successor serves now: stop accepting, finish what is in flight, exit. */
  | { t: "retire" }
  /**
   * Its primary answers on the channel socket: only then may the worker, orphaned, see to a
   * succession (one that died before would race its own spawner's next attempt).
   */
  | { t: "serving" }
  /** A standby (`STANDBY_ENV`) starts accepting: the worker it stood by for died. */
  | { t: "accept" };
export type FromWorker =
  | { t: "ready" }
  | { t: "listen"; id: number; host: string; port: number }
  | { t: "done"; id: number; error?: string }
  | { t: "wake"; id: number; app: string }
  | {
      t: "report";
      apps: Record<string, WorkerApp>;
      spans: [string, GatewaySpan][];
      spansDropped: number;
    };

/** Marks a gateway worker's environment (the same entry, main.ts, runs the primary). */
export const WORKER_ENV = "CARAVAN_GATEWAY_WORKER";
/**
 * Marks a standby worker: it keeps the whole state and a copy of every listening socket but
 * accepts on none until its primary says `accept` — when the one worker that did dies.
 */
export const STANDBY_ENV = "CARAVAN_GATEWAY_STANDBY";

/** How often the gateway pushes load, stats and spans (the autoscaler looks every 200 ms). */
export const REPORT_EVERY_MS = 200;
/**
 * At most this many spans per report (500 a second), the workers' budget shared among them
 * and spent as requests are read (`GatewayHooks.spanBudget`): a fifth of what the telemetry
 * writer keeps (2,500 a second), the rest left to the apps' own spans of those traces. At
 * saturation 2,500 gateway spans a second cost ~4 µs of CPU a request (made, serialised twice,
 * stored) and doubled the p99 (bench/RESULTS.md, "One gateway worker on two cores").
 */
export const MAX_SPANS_PER_REPORT = 100;

/** The longest path a unix socket can have on Linux (`sun_path`: 108 bytes with its NUL). */
const MAX_SOCKET_PATH = 107;

/**
 * Where the gateway listens for its control plane: `gateway.sock` in the home; for a home too
 * deep for that, a socket named by the home in a directory of this user's alone (0700) under
 * the temp dir.
 */
export function socketPath(home: string): string {
  const inHome = join(home, "gateway.sock");
  if (Buffer.byteLength(inHome) <= MAX_SOCKET_PATH) return inHome;
  const uid = process.getuid?.() ?? 0;
  const dir = join(tmpdir(), `caravan-${uid}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const found = lstatSync(dir);
  if (!found.isDirectory() || found.uid !== uid || (found.mode & 0o077) !== 0)
    throw new Error(
      `${dir} must be a directory of this user's alone (mode 0700) to hold the gateway's socket (the home ${home} is too deep for one): remove it, or use a shorter CARAVAN_HOME`,
    );
  const name = createHash("sha256").update(home).digest("hex").slice(0, 24);
  return join(dir, `gateway-${name}.sock`);
}
export const gatewayLog = (home: string) => join(home, "gateway.log");
/** The store's meta key holding the gateway process's pid and start time. */
export const GATEWAY_META = "gateway-process";

/** Sends one message. */
export function send(socket: Socket, message: ToGateway | FromGateway): void {
  if (!socket.destroyed) socket.write(`${JSON.stringify(message)}\n`);
}

/** Calls `onMessage` with each complete line's message; a line that is not JSON ends the channel. */
export function readMessages<T>(socket: Socket, onMessage: (message: T) => void): void {
  let partial = "";
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    const lines = (partial + chunk).split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) {
      if (!line) continue;
      let message: T;
      try {
        message = JSON.parse(line) as T;
      } catch {
        socket.destroy();
        return;
      }
      onMessage(message);
    }
  });
  socket.resume(); // paused by whoever read the hello
}

/** A connection to the gateway's socket at `path`, within `timeoutMs`. */
export function connectTo(path: string, timeoutMs: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = createConnection(path);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error("timed out"));
    }, timeoutMs);
    socket.once("connect", () => {
      clearTimeout(timer);
      socket.removeAllListeners("error");
      socket.on("error", () => {});
      resolve(socket);
    });
    socket.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** The gateway's hello (its first line), or undefined when it sends none within 2 s. */
export function greeting(socket: Socket): Promise<Hello | undefined> {
  return new Promise((resolve) => {
    let buffered = "";
    const timer = setTimeout(() => done(undefined), 2_000);
    const onData = (chunk: Buffer) => {
      buffered += chunk.toString("utf8");
      const end = buffered.indexOf("\n");
      if (end < 0) return;
      const rest = buffered.slice(end + 1);
      let hello: FromGateway | undefined;
      try {
        hello = JSON.parse(buffered.slice(0, end)) as FromGateway;
      } catch {
        hello = undefined;
      }
      // Anything after the hello is for the message reader.
      if (rest) socket.unshift(Buffer.from(rest, "utf8"));
      done(hello?.t === "hello" ? hello : undefined);
    };
    const done = (hello: Hello | undefined) => {
      clearTimeout(timer);
      socket.off("data", onData);
      socket.off("close", onClose);
      socket.pause();
      resolve(hello);
    };
    const onClose = () => done(undefined);
    socket.on("data", onData);
    socket.once("close", onClose);
  });
}

export type Hello = Extract<FromGateway, { t: "hello" }>;

/** The hello of the gateway answering on `path` now (the connection is closed), if one does. */
export async function helloAt(path: string): Promise<Hello | undefined> {
  const socket = await connectTo(path, 1_000).catch(() => undefined);
  if (!socket) return undefined;
  const hello = await greeting(socket);
  socket.destroy();
  return hello;
}

/**
 * Requests sent with an id, each settled by the `done` with that id (rejected with its error,
 * if any): the control plane's to the gateway, the primary's to each worker.
 */
export class PendingRequests {
  private readonly waiting = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  /** Waits for the `done` of request `id` (sent, or about to be). */
  wait(id: number): Promise<void> {
    return new Promise((resolve, reject) => this.waiting.set(id, { resolve, reject }));
  }

  /** A `done` came. */
  done(m: { id: number; error?: string }): void {
    const p = this.waiting.get(m.id);
    this.waiting.delete(m.id);
    if (m.error === undefined) p?.resolve();
    else p?.reject(new Error(m.error));
  }

  /** The other side is gone: whatever waits on it is over (its share went with it). */
  gone(): void {
    for (const p of this.waiting.values()) p.resolve();
    this.waiting.clear();
  }
}
