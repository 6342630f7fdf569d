/**
 * The control plane daemon (`caravan server run`): one per `$CARAVAN_HOME`, serving the
 * control plane's API on 127.0.0.1. Clients find and start it with `../daemon.ts`; kept
 * apart so that clients never load the API server or the store.
 */
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { ControlPlane } from "../control-plane.ts";
import { ensureToken, lockHeld, readInfo, type DaemonInfo } from "../daemon.ts";
import { HOME_CHECK_MS, homePaths, type HomePaths } from "../home.ts";
import { processStartTime } from "../os.ts";
import { buildApi } from "./api.ts";

/** The daemon process itself: one per `$CARAVAN_HOME`. */
export async function runDaemon(paths = homePaths()): Promise<void> {
  const other = readInfo(paths);
  if (other && other.pid !== process.pid) {
    process.stderr.write(
      `a control plane already runs for ${paths.home} (pid ${other.pid}, ${other.url})\n`,
    );
    return;
  }
  if (!acquireLock(paths)) {
    process.stderr.write(`another control plane is starting for ${paths.home}\n`);
    return;
  }
  const token = ensureToken(paths);
  const plane = new ControlPlane(paths);
  let stopping = false;
  const stop = async (stopApps: boolean) => {
    if (stopping) return;
    stopping = true;
    let code = 0;
    try {
      await api.close();
      await plane.shutdown({ stopApps });
    } catch (e) {
      process.stderr.write(`shutdown: ${(e as Error)?.stack ?? e}\n`);
      code = 1;
    } finally {
      // Whatever failed, a stopping daemon always leaves and says so: no stale address.
      rmSync(paths.daemonFile, { force: true });
      rmSync(paths.daemonLock, { force: true });
      process.exit(code);
    }
  };
  // Requests wait until the previous control plane's apps are adopted: recovery starts
  // processes, which must be given the API's address, so the API listens first.
  let recovered!: () => void;
  const ready = new Promise<void>((resolve) => (recovered = resolve));
  const api = buildApi(plane, token, (stopApps) => void stop(stopApps), ready);
  const url = await listenStable(api, plane);
  plane.setApiAccess(url, token);
  try {
    await plane.recover();
  } catch (e) {
    // Serve anyway (what was adopted is served): a client must never wait on a lost promise.
    process.stderr.write(`recovery failed: ${(e as Error)?.stack ?? e}\n`);
  } finally {
    recovered();
  }
  const info: DaemonInfo = {
    pid: process.pid,
    startTime: processStartTime(process.pid) ?? "",
    url,
  };
  writeFileSync(paths.daemonFile, JSON.stringify(info), { mode: 0o600 });
  // Apps keep running when the daemon is told to stop by a signal; `server stop` stops them.
  process.on("SIGTERM", () => void stop(false));
  process.on("SIGINT", () => void stop(false));
  // What `caravan server stop` sends when it cannot use the API (the token file was lost):
  // stop with the apps. Only the daemon's owner (or root) can send it.
  process.on("SIGUSR2", () => void stop(true));
  // Its state removed under it: no command can reach this control plane or its apps any
  // more (a new one would start from nothing beside them), so it stops, with them.
  setInterval(() => {
    if (existsSync(paths.db)) return;
    process.stderr.write(`${paths.db} is gone (its home removed): stopping, with the apps\n`);
    void stop(true);
  }, HOME_CHECK_MS).unref();
  process.stderr.write(`caravan control plane ${url} pid ${process.pid}\n`);
}

/**
 * Listens on the port the previous daemon of this home used, when it is free: apps it left
 * running (and adopted now) were given that address for task runs.
 */
export async function listenStable(
  api: ReturnType<typeof buildApi>,
  plane: ControlPlane,
): Promise<string> {
  const previous = Number(plane.store.getMeta("api-port") ?? 0);
  let url: string;
  try {
    url = await api.listen({ port: previous, host: "127.0.0.1" });
  } catch {
    url = await api.listen({ port: 0, host: "127.0.0.1" });
  }
  plane.store.setMeta("api-port", new URL(url).port);
  return url;
}

/** An exclusive lock file holding our pid; a stale one (dead pid) is taken over. */
function acquireLock(paths: HomePaths): boolean {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      writeFileSync(
        paths.daemonLock,
        JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) }),
        { flag: "wx", mode: 0o600 },
      );
      return true;
    } catch {
      if (lockHeld(paths)) return false;
      rmSync(paths.daemonLock, { force: true }); // stale: its holder is gone
    }
  }
  return false;
}
