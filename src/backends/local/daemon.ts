/**
 * Finding, starting and stopping the control plane daemon (the daemon itself is
 * `server/daemon.ts`, run as `caravan server run`). The daemon's address and token live
 * under `$CARAVAN_HOME` (mode 0600).
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CaravanError } from "../../errors.ts";
import { ROUTES } from "../http-routes.ts";
import { homePaths, type HomePaths } from "./home.ts";
import { isAlive } from "./os.ts";
import { logTail } from "./supervisor.ts";

const BIN = join(dirname(fileURLToPath(import.meta.url)), "../../../bin/caravan.js");

export interface DaemonInfo {
  pid: number;
  /** Kernel start time of the daemon's process, to tell it from a reused pid. */
  startTime: string;
  url: string;
}

/** The access token, created on first use; only the owner may read it. */
export function ensureToken(paths: HomePaths): string {
  if (!existsSync(paths.token)) {
    try {
      writeFileSync(paths.token, randomBytes(32).toString("hex"), { mode: 0o600, flag: "wx" });
    } catch {
      /* created concurrently */
    }
  }
  return readFileSync(paths.token, "utf8").trim();
}

export function readInfo(paths: HomePaths): DaemonInfo | undefined {
  try {
    const info = JSON.parse(readFileSync(paths.daemonFile, "utf8")) as DaemonInfo;
    return isAlive(info.pid, info.startTime) ? info : undefined;
  } catch {
    return undefined;
  }
}

async function healthy(info: DaemonInfo, token: string): Promise<boolean> {
  try {
    const res = await fetch(`${info.url}${ROUTES.health}`, {
      headers: { authorization: `Bearer ${token}` },
      signal: AbortSignal.timeout(2000),
    });
    return res.ok;
  } catch {
    return false;
  }
}

export async function daemonStatus(
  paths = homePaths(),
): Promise<{ running: boolean; pid: number | null; url: string | null }> {
  const info = readInfo(paths);
  if (info && (await healthy(info, ensureToken(paths))))
    return { running: true, pid: info.pid, url: info.url };
  return { running: false, pid: null, url: null };
}

/** Returns the running daemon, starting one (detached) if there is none. */
export async function ensureDaemon(
  paths = homePaths(),
): Promise<DaemonInfo & { token: string; started: boolean }> {
  const token = ensureToken(paths);
  const existing = readInfo(paths);
  if (existing && (await healthy(existing, token))) return { ...existing, token, started: false };

  const log = openSync(paths.daemonLog, "a");
  // The local backend's daemon, whichever backend the environment or config names.
  const child = spawn(process.execPath, [BIN, "server", "run", "--backend", "local"], {
    detached: true,
    stdio: ["ignore", log, log],
    env: { ...process.env, CARAVAN_HOME: paths.home },
    cwd: paths.home,
  });
  closeSync(log);
  child.unref();
  let exited = false;
  child.once("exit", () => (exited = true));
  const deadline = Date.now() + 20_000;
  // Polled every 20 ms: the daemon is up within a second, and a poll is a cheap local read.
  while (Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
    const info = readInfo(paths);
    if (info && (await healthy(info, token)))
      return { ...info, token, started: info.pid === child.pid };
    // Our child gives way when another client's daemon is starting: wait for that one.
    if (exited && !readInfo(paths) && !lockHeld(paths)) break;
  }
  throw new CaravanError(
    "SERVER_UNREACHABLE",
    `the control plane did not start (see ${paths.daemonLog}):\n${logTail(paths.daemonLog, 0, 15)}`,
  );
}

/** Stops the daemon; with `stopApps` (the default) its apps too, dependents first. */
export async function stopDaemon(paths = homePaths(), stopApps = true): Promise<boolean> {
  const info = readInfo(paths);
  if (!info) return false;
  const token = ensureToken(paths);
  await fetch(`${info.url}${ROUTES.shutdown}`, {
    method: "POST",
    headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
    body: JSON.stringify({ stopApps }),
  }).catch(() => {});
  for (let i = 0; i < 600 && isAlive(info.pid, info.startTime); i++)
    await new Promise((r) => setTimeout(r, 50));
  return true;
}

/** Whether a live process holds the start-up lock (a daemon is starting or running). */
export function lockHeld(paths: HomePaths): boolean {
  try {
    const held = JSON.parse(readFileSync(paths.daemonLock, "utf8")) as {
      pid: number;
      startTime: string;
    };
    return isAlive(held.pid, held.startTime);
  } catch {
    return false;
  }
}
