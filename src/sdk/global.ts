/**
 * State shared by every copy of caravan loaded in one process. A user's file may import
 * `caravan` from a different copy than the CLI or runtime runs from (source vs build, a nested
 * install), so identity checks use brands and shared state lives on `globalThis` under
 * registered symbols, never in module-level variables.
 */

/** Marks an object as a caravan environment; the value is its kind. */
export const ENV_BRAND = Symbol.for("caravan.environment");
/** Marks input values (`AppEndpoint`, `RunOutput`, `File`, `Dir`); the value is the kind. */
export const VALUE_BRAND = Symbol.for("caravan.value");

/** What the runtime tells the app it runs: set before the user's code is imported. */
export interface RuntimeContext {
  /** The environment this process serves. */
  name: string;
  project: string;
  domain: string;
  /** Internal endpoints of every app this one may call, by app name. */
  endpoints: Record<string, string>;
  /** Public endpoints by app name. */
  publicEndpoints: Record<string, string>;
  /** Resolved input values by input name. */
  inputs: Record<string, unknown>;
  /** True while the bundle is being imported (a stray top-level `deploy()` is ignored). */
  loading: boolean;
}

interface SharedState {
  /** Every environment constructed in this process, in construction order. */
  environments: object[];
  /** Set inside an app process by the runtime. */
  runtime?: RuntimeContext;
  /** Endpoints learnt by `deploy()` in this process, so `env.endpoint` works after it. */
  deployedEndpoints: Map<string, { endpoint: string; internalEndpoint: string }>;
  /** Control plane connections `run()` opened in this process, by home and address. */
  runConnections?: Map<string, unknown>;
  /** Task environments `run()` deployed in this process (`project/domain/name`). */
  deployedTaskEnvironments: Set<string>;
  /** Set by `init()`. */
  config?: { rootDir?: string; project?: string; domain?: string };
}

const KEY = Symbol.for("caravan.shared-state");

export function shared(): SharedState {
  const g = globalThis as unknown as Record<symbol, SharedState | undefined>;
  let state = g[KEY];
  if (!state) {
    state = { environments: [], deployedEndpoints: new Map(), deployedTaskEnvironments: new Set() };
    g[KEY] = state;
  }
  return state;
}
