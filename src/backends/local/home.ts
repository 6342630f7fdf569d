import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { caravanHome, clientPaths } from "../home.ts";

/**
 * Everything the local control plane keeps, under `$CARAVAN_HOME` beside the client's
 * snapshots (`../home.ts`): its database, token, daemon files, logs, secrets and inputs files.
 */
export function homePaths(home = caravanHome()) {
  return {
    ...clientPaths(home),
    db: join(home, "state.db"),
    /** Spans, log records and metric points apps report (OTLP), apart from the state. */
    telemetry: join(home, "telemetry.db"),
    token: join(home, "token"),
    daemonFile: join(home, "daemon.json"),
    daemonLock: join(home, "daemon.lock"),
    daemonLog: join(home, "daemon.log"),
    logs: join(home, "logs"),
    secrets: join(home, "secrets.json"),
    inputFiles: join(home, "inputs"),
  };
}

export type HomePaths = ReturnType<typeof homePaths>;

/**
 * How often the processes that live on their own (the control plane, the gateway) check that
 * their home still exists: one removed under them (a finished `caravan serve`'s, a test's
 * temporary home, removed by hand) leaves nothing that can reach them, and they end.
 */
export const HOME_CHECK_MS = 5_000;

/** One directory per scope, so the same app name in two domains never shares a file. */
export function logFile(paths: HomePaths, project: string, domain: string, name: string): string {
  const dir = join(paths.logs, project, domain);
  mkdirSync(dir, { recursive: true });
  return join(dir, `${name}.log`);
}
