/**
 * The protocol between the control plane and the runtime inside an app process, over the
 * child's IPC channel. Two phases, so code can be loaded while dependencies still start:
 *
 *   runtime -> { type: "loaded" }     the bundle is imported and the environment found
 *   plane   -> { type: "start" }      every dependency is ready: run start-up hooks, listen
 *   runtime -> { type: "ready" }      the server listens (a server function: its port answers HTTP)
 *   runtime -> { type: "failed", error }  loading or starting threw (the process then exits 1)
 *
 * Without an IPC channel (started by hand) the runtime starts right after loading.
 */
export type RuntimeMessage =
  { type: "loaded" } | { type: "ready"; port: number } | { type: "failed"; error: string };

export type PlaneMessage = { type: "start" };

/** Passed to the runtime as JSON in `CARAVAN_RUNTIME`. */
export interface RuntimeConfig {
  name: string;
  project: string;
  domain: string;
  /** Absolute path of the snapshot's entry module. */
  entry: string;
  /** Where the user's code came from: the process's working directory. */
  sourceRoot: string;
  port: number;
  host: string;
  endpoints: Record<string, string>;
  publicEndpoints: Record<string, string>;
  inputs: Record<string, string>;
}

export const RUNTIME_ENV = "CARAVAN_RUNTIME";
