/**
 * The channel between the local control plane and its gateway process: newline-delimited
 * JSON over a unix socket in the caravan home (mode 0600). The gateway listens, the control
 * plane connects; each side first sends a `hello` with `PROTOCOL`. A control plane that finds
 * a gateway speaking another version replaces it (see client.ts).
 */
import { createHash } from "node:crypto";
import { lstatSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Socket } from "node:net";
import type { AppLoad, AppStats, GatewaySpan, Replica, RouteOptions } from "../../gateway/index.ts";
import type { WorkerApp } from "./aggregate.ts";

/** Bumped when a message changes meaning; both sides refuse to talk across versions. */
export const PROTOCOL = 1;

export interface Ports {
  public: number;
  internal: number;
}

/** One app as the control plane wants it served (a whole-state `sync` lists every one). */
export interface RouteState {
  app: string;
  ports: Ports;
  options: RouteOptions;
  replicas: Replica[];
}

/** Control plane → gateway. Messages with an `id` are answered by a `done` with that id. */
export type ToGateway =
  | { t: "hello"; protocol: number }
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
  | { t: "hello"; protocol: number; pid: number; startTime: string; build: string }
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
 * Inside the gateway: its primary (which holds the channel) and its workers (which serve,
 * sharing the listeners), over node:cluster's IPC. The primary passes the control plane's
 * operations on with ids of its own.
 */
export type ToWorker = Exclude<ToGateway, { t: "hello" }>;
export type FromWorker =
  | { t: "ready" }
  | { t: "done"; id: number; error?: string }
  | { t: "wake"; id: number; app: string }
  | {
      t: "report";
      apps: Record<string, WorkerApp>;
      spans: [string, GatewaySpan][];
      spansDropped: number;
    };

/** How often the gateway pushes load, stats and spans (the autoscaler looks every 200 ms). */
export const REPORT_EVERY_MS = 200;
/**
 * At most this many spans per report (2,500 a second): the telemetry writer keeps no more
 * than that anyway, and serialising every span at saturation would cost both processes.
 */
export const MAX_SPANS_PER_REPORT = 500;

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
