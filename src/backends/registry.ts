/**
 * The backends caravan can deploy to, loaded lazily: a command pays only for the one it
 * uses (the kubernetes client is never loaded for a local deploy, nor the reverse). Nothing
 * outside `src/backends/` imports a backend's internals; it asks here (an ESLint rule keeps
 * it so).
 */
import type { Backend } from "./contract.ts";
import { CaravanError } from "../errors.ts";
import type { BackendName, ResolvedConfig } from "../sdk/config.ts";
import type { Scope } from "./contract.ts";

/** Secrets as the client sees them: managed, checked before a deploy, fingerprinted. */
export interface SecretAccess {
  /** Where they are kept, for messages ("the local secret store", "Secret x in namespace y"). */
  readonly where: string;
  set(scope: Scope, name: string, value: string): Promise<void>;
  /** Names only, never values. */
  list(scope: Scope): Promise<string[]>;
  /** False when there was no such secret. */
  delete(scope: Scope, name: string): Promise<boolean>;
  /** The names of `keys` that are not set in `scope`. */
  missing(scope: Scope, keys: string[]): Promise<string[]>;
  /** A keyed hash of the values of `keys` (never the values): a changed secret changes a revision. */
  fingerprint(scope: Scope, keys: string[]): Promise<string>;
}

/** Whether a backend's daemon runs, and where (`caravan server status --json`). */
export interface DaemonStatus {
  running: boolean;
  pid: number | null;
  url: string | null;
}

/** A daemon the backend runs on this machine: `caravan server start|stop|status|run`. */
export interface DaemonControl {
  /** Starts it in the background, unless it runs already (`started` says which). */
  start(config: ResolvedConfig): Promise<{ pid: number; url: string; started: boolean }>;
  /**
   * Stops it; with `stopApps`, everything it runs too (dependents first), else they keep
   * running for the next one to adopt. False when it was not running.
   */
  stop(config: ResolvedConfig, opts: { stopApps: boolean }): Promise<boolean>;
  status(config: ResolvedConfig): Promise<DaemonStatus>;
  /** Runs the daemon in this process (what `start` spawns); resolves once it serves. */
  run(config: ResolvedConfig): Promise<void>;
}

/** A backend that lives in this process for one `caravan serve` session. */
export interface InProcessBackend {
  readonly backend: Backend;
  /** Stops everything it runs (dependents first) and removes the session's state. */
  shutdown(): Promise<void>;
}

/** What a backend module exports. Optional members are capabilities a backend may lack. */
export interface BackendProvider {
  readonly name: BackendName;
  /**
   * Connects to the backend. With `start`, starts what it needs (the local control plane);
   * without, resolves undefined when there is nothing running to talk to.
   */
  open(config: ResolvedConfig, opts: { start: boolean }): Promise<Backend | undefined>;
  /**
   * Its backends can say what a deploy would change (`Backend.preview`), so `plan` connects
   * to it. Without, `plan` asks it nothing unless an AppEndpoint names an app outside the plan.
   */
  readonly previews?: boolean;
  /** Secret management, when the backend has it. */
  secrets?(config: ResolvedConfig): SecretAccess;
  /** Its daemon on this machine, when it has one. */
  readonly daemon?: DaemonControl;
  /**
   * A backend in this process, for `caravan serve`: its state apart from any daemon's, and
   * gone with the session. `onStop` is called when it is told to stop from outside.
   */
  inProcess?(config: ResolvedConfig, opts?: { onStop?: () => void }): Promise<InProcessBackend>;
}

const providers: Record<BackendName, () => Promise<BackendProvider>> = {
  local: async () => (await import("./local/index.ts")).provider,
  kubernetes: async () => (await import("./kubernetes/index.ts")).provider,
};

/** The provider of the configured backend. */
export async function backendProvider(config: { backend: BackendName }): Promise<BackendProvider> {
  const load = providers[config.backend];
  if (!load) {
    throw new CaravanError(
      "USAGE",
      `"${config.backend}" is not a backend; use one of: ${Object.keys(providers).join(", ")}`,
    );
  }
  return load();
}

/**
 * Connects to the configured backend (`BackendProvider.open`): with `start`, starting what it
 * needs; without, undefined when nothing runs there. Light to import: a command that only
 * talks to a backend (`caravan status`) loads no SDK.
 */
export async function connectBackend(
  config: ResolvedConfig,
  opts: { start: boolean },
): Promise<Backend | undefined> {
  return (await backendProvider(config)).open(config, opts);
}

/**
 * The error for a command the configured backend cannot do, naming both and the way out.
 * @example throw unsupported("kubernetes", "caravan token", "tokens guard the local gateway")
 */
export function unsupported(backend: BackendName, what: string, why?: string): CaravanError {
  return new CaravanError(
    "UNSUPPORTED",
    `${what} is not available with the ${backend} backend${why ? ` (${why})` : ""}; use --backend local, or set backend in caravan.config.*`,
    { backend, what },
  );
}
