/**
 * Finding, starting and stopping the control plane daemon (the daemon itself is
 * `server/daemon.ts`, run as `caravan server run`). The daemon's address and token live
 * under `$CARAVAN_HOME` (mode 0600).
 */
import { closeSync, existsSync, openSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { CaravanError } from "../../errors.ts";
import { requestJSON } from "../http-client.ts";
import { ROUTES } from "../http-routes.ts";
import { homePaths, type HomePaths } from "./home.ts";
import { isAlive } from "./os.ts";

const BIN = join(dirname(fileURLToPath(import.meta.url)), "../../../bin/caravan.js");

export interface DaemonInfo {
  pid: number;
  /** Kernel start time of the daemon's process, to tell it from a reused pid. */
  startTime: string;
  url: string;
}

/** The access token, created on first use; only the owner may read it. */
export function ensureToken(paths: HomePaths): string {
  const running = readInfo(paths);
  if (running) {
    // A running daemon keeps the token it started with: a new file would not be its token.
    const token = readToken(paths);
    if (token === undefined) throw lostToken(paths, running, "was removed");
    return token;
  }
  if (!existsSync(paths.token)) {
    try {
      // node:crypto loaded only to create a token: a client that reads one starts faster.
      const { randomBytes } = process.getBuiltinModule("node:crypto");
      writeFileSync(paths.token, randomBytes(32).toString("hex"), { mode: 0o600, flag: "wx" });
    } catch {
      /* created concurrently */
    }
  }
  return readFileSync(paths.token, "utf8").trim();
}

/** The token file's content; undefined when there is none. */
function readToken(paths: HomePaths): string | undefined {
  try {
    return readFileSync(paths.token, "utf8").trim();
  } catch {
    return undefined;
  }
}

/**
 * The daemon runs but cannot be reached with `$CARAVAN_HOME/token`: say so, and how to get
 * out (stopping it works without the token: `stopDaemon` signals it as its owner).
 */
function lostToken(paths: HomePaths, info: DaemonInfo, what: string): CaravanError {
  return new CaravanError(
    "UNAUTHORIZED",
    `the control plane of ${paths.home} (pid ${info.pid}, ${info.url}) runs, but ${paths.token} ${what} since it started, so it refuses every request. ` +
      `To recover: caravan server stop (it stops it and its apps without the token; --keep-apps leaves the apps running, but they keep run tokens of the old one: redeploy them with --force), ` +
      `then any command starts a control plane with the current token`,
    { pid: info.pid, url: info.url, token: paths.token },
  );
}

export function readInfo(paths: HomePaths): DaemonInfo | undefined {
  try {
    const info = JSON.parse(readFileSync(paths.daemonFile, "utf8")) as DaemonInfo;
    return isAlive(info.pid, info.startTime) ? info : undefined;
  } catch {
    return undefined;
  }
}

/** Whether the daemon answers; throws when it answers that the token is not its own. */
async function healthy(paths: HomePaths, info: DaemonInfo, token: string): Promise<boolean> {
  let status: number;
  try {
    ({ status } = await requestJSON(`${info.url}${ROUTES.health}`, { token, timeoutMs: 2000 }));
  } catch {
    return false;
  }
  if (status === 401) throw lostToken(paths, info, "was replaced");
  return status >= 200 && status <= 299;
}

export async function daemonStatus(
  paths = homePaths(),
): Promise<{ running: boolean; pid: number | null; url: string | null }> {
  const info = readInfo(paths);
  if (info && (await healthy(paths, info, ensureToken(paths))))
    return { running: true, pid: info.pid, url: info.url };
  return { running: false, pid: null, url: null };
}

/**
 * The token for `url`, when it is the control plane this home started and recorded (its
 * `daemon.json`, for a live process); undefined for any other address. The home's token
 * goes nowhere else.
 */
export function tokenFor(url: string, paths = homePaths()): string | undefined {
  const info = readInfo(paths);
  if (!info) return undefined;
  const origin = (u: string) => {
    try {
      return new URL(u).origin;
    } catch {
      return undefined;
    }
  };
  return origin(url) !== undefined && origin(url) === origin(info.url)
    ? ensureToken(paths)
    : undefined;
}

/** Returns the running daemon, starting one (detached) if there is none. */
export async function ensureDaemon(
  paths = homePaths(),
): Promise<DaemonInfo & { token: string; started: boolean }> {
  const token = ensureToken(paths);
  const existing = readInfo(paths);
  if (existing && (await healthy(paths, existing, token)))
    return { ...existing, token, started: false };

  // Loaded only to start one: most commands find it running, and status starts faster without.
  const { spawn } = await import("node:child_process");
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
    if (info && (await healthy(paths, info, token)))
      return { ...info, token, started: info.pid === child.pid };
    // Our child gives way when another client's daemon is starting: wait for that one.
    if (exited && !readInfo(paths) && !lockHeld(paths)) break;
  }
  throw new CaravanError(
    "SERVER_UNREACHABLE",
    // The supervisor's module is loaded only here: a client that finds its daemon needs none.
    `the control plane did not start (see ${paths.daemonLog}):\n${(await import("./supervisor.ts")).logTail(paths.daemonLog, 0, 15)}`,
  );
}

/** How long `stopDaemon` waits for the daemon to be gone (apps drain for up to 30 s). */
const STOP_WAIT_MS = 60_000;

/**
 * Stops the daemon; with `stopApps` (the default) its apps too, dependents first. Asked over
 * the API; when that cannot be done (the token file was removed or replaced, the API does not
 * answer), the daemon is signalled as its owner (SIGUSR2: stop with the apps; SIGTERM: keep
 * them), after checking that the pid is still that daemon's. True once it is gone, false when
 * it was not running; throws when it is still running after the wait.
 */
export async function stopDaemon(
  paths = homePaths(),
  stopApps = true,
  waitMs = STOP_WAIT_MS,
): Promise<boolean> {
  const info = readInfo(paths);
  if (!info) return false;
  const token = readToken(paths);
  const asked =
    token !== undefined &&
    (await fetch(`${info.url}${ROUTES.shutdown}`, {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ stopApps }),
      signal: AbortSignal.timeout(5000),
    }).then(
      (res) => res.ok,
      () => false,
    ));
  if (!asked && isAlive(info.pid, info.startTime)) {
    try {
      process.kill(info.pid, stopApps ? "SIGUSR2" : "SIGTERM");
    } catch {
      /* gone meanwhile */
    }
  }
  const deadline = Date.now() + waitMs;
  while (isAlive(info.pid, info.startTime)) {
    if (Date.now() > deadline)
      throw new CaravanError(
        "SERVER_UNREACHABLE",
        `the control plane of ${paths.home} (pid ${info.pid}) is still running ${Math.round(waitMs / 1000)} s after it was told to stop${stopApps ? " (its apps may still be stopping)" : ""}; see ${paths.daemonLog}, run caravan server stop again, or end it with: kill ${info.pid}`,
        { pid: info.pid },
      );
    await new Promise((r) => setTimeout(r, 50));
  }
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
