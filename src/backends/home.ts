/**
 * The client's state directory, `$CARAVAN_HOME` (default `~/.caravan`): what a deploy writes
 * before it talks to any backend (code snapshots, the compiled runtime, file snapshots), so
 * every backend shares these. A backend's own state (the local control plane's database,
 * logs, secrets, daemon files) is its business: see `local/home.ts`.
 */
import { chmodSync, mkdirSync, statSync } from "node:fs";
import { join, resolve } from "node:path";

export function caravanHome(): string {
  return resolve(process.env.CARAVAN_HOME || join(homeDirectory(), ".caravan"));
}

/** `os.homedir()`, which answers $HOME when set: node:os loads only when it is not. */
function homeDirectory(): string {
  return process.env.HOME || process.getBuiltinModule("node:os").homedir();
}

/**
 * An opaque id of a home, given to the processes it starts (`CARAVAN_HOME_ID`) in place of its
 * path: enough to tell which home a process belongs to, no pointer to the token.
 */
export function homeId(home = caravanHome()): string {
  // node:crypto loaded on first use: a CLI command that never needs it (status) starts faster.
  const { createHash } = process.getBuiltinModule("node:crypto");
  return createHash("sha256").update(home).digest("hex").slice(0, 16);
}

/**
 * Where snapshots go, content-addressed; created on first use. The home is owner-only (0700),
 * also when it existed with a wider mode: it holds the control plane's token, its database,
 * the apps' logs and the secret store.
 */
export function clientPaths(home = caravanHome()) {
  mkdirSync(home, { recursive: true, mode: 0o700 });
  ownerOnly(home);
  return {
    home,
    /** Code snapshots: `bundles/<hash>/entry.js`. */
    bundles: join(home, "bundles"),
    /** The compiled caravan runtime: `runtime/<hash>/`. */
    runtime: join(home, "runtime"),
    /** File snapshots (`include`, File/Dir inputs): `files/<hash>/`. */
    files: join(home, "files"),
  };
}

export type ClientPaths = ReturnType<typeof clientPaths>;

/** Makes a directory of ours owner-only (one stat per call; a chmod only when it is wider). */
function ownerOnly(dir: string): void {
  const { mode, uid } = statSync(dir);
  if ((mode & 0o077) === 0 || (process.getuid && uid !== process.getuid())) return;
  chmodSync(dir, 0o700);
}
