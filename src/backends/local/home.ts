import { mkdirSync } from "node:fs";
import { homedir } from "node:os";
import { join, resolve } from "node:path";

/** Everything the local control plane keeps lives under `$CARAVAN_HOME` (default `~/.caravan`). */
export function caravanHome(): string {
  return resolve(process.env.CARAVAN_HOME || join(homedir(), ".caravan"));
}

export function homePaths(home = caravanHome()) {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  return {
    home,
    db: join(home, "state.db"),
    token: join(home, "token"),
    daemonFile: join(home, "daemon.json"),
    daemonLock: join(home, "daemon.lock"),
    daemonLog: join(home, "daemon.log"),
    logs: join(home, "logs"),
    bundles: join(home, "bundles"),
    runtime: join(home, "runtime"),
    secrets: join(home, "secrets.json"),
    files: join(home, "files"),
    inputFiles: join(home, "inputs"),
  };
}

export type HomePaths = ReturnType<typeof homePaths>;

/** One directory per scope, so the same app name in two domains never shares a file. */
export function logFile(paths: HomePaths, project: string, domain: string, name: string): string {
  const dir = join(paths.logs, project, domain);
  mkdirSync(dir, { recursive: true });
  return join(dir, `${name}.log`);
}
