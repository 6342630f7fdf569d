/**
 * The local backend, as the registry sees it: a control plane daemon on this machine (started
 * on demand) reached over HTTP, a secret store in `$CARAVAN_HOME`, the daemon's controls
 * (`caravan server`) and an in-process control plane for `caravan serve`. Heavy pieces (the
 * control plane, the API server) load only when a command needs them.
 */
import type { ResolvedConfig } from "../../sdk/config.ts";
import type { Backend } from "../contract.ts";
import { HttpBackend } from "../http-client.ts";
import type { BackendProvider, DaemonControl, SecretAccess } from "../registry.ts";
import { CaravanError } from "../../errors.ts";
import {
  daemonStatus,
  ensureDaemon,
  ensureToken,
  readInfo,
  stopDaemon,
  tokenFor,
} from "./daemon.ts";
import { homePaths } from "./home.ts";

/** The credential for a `controlPlane` this home did not start: given explicitly, never guessed. */
export const CONTROL_PLANE_TOKEN_ENV = "CARAVAN_CONTROL_PLANE_TOKEN";

async function open(
  config: ResolvedConfig,
  opts: { start: boolean },
): Promise<Backend | undefined> {
  if (config.controlPlane) {
    // A control plane at a configured address: not ours to start. The home's token goes only
    // to the control plane this home started (a config file may come with a cloned repository).
    const token = tokenFor(config.controlPlane) ?? process.env[CONTROL_PLANE_TOKEN_ENV];
    if (!token) {
      throw new CaravanError(
        "UNAUTHORIZED",
        `controlPlane ${config.controlPlane}${config.file ? ` (set in ${config.file})` : ""} is not the control plane this CARAVAN_HOME started, so it is not sent this home's token: set ${CONTROL_PLANE_TOKEN_ENV} to that control plane's own token, or remove controlPlane from the config to use the local one`,
        { controlPlane: config.controlPlane },
      );
    }
    return new HttpBackend(config.controlPlane, token);
  }
  // The daemon this home recorded, alive: its first answer stands for a health check (one
  // round trip less for `caravan status`); when it cannot be reached or refuses the token, the
  // checked way below finds (or starts) it and says what is wrong.
  const paths = homePaths();
  const recorded = readInfo(paths);
  const checked = async () => {
    if (opts.start) return ensureDaemon(paths);
    const status = await daemonStatus(paths);
    if (!status.running || !status.url)
      throw new CaravanError(
        "SERVER_UNREACHABLE",
        `the control plane of ${paths.home} stopped answering; check caravan server status`,
      );
    return { url: status.url, token: ensureToken(paths) };
  };
  if (recorded) return new HttpBackend(recorded.url, ensureToken(paths), checked);
  if (opts.start) {
    const daemon = await ensureDaemon(paths);
    return new HttpBackend(daemon.url, daemon.token);
  }
  return undefined;
}

function secrets(): SecretAccess {
  // Loaded on first use: opening the backend (caravan status) needs no secret store.
  let loaded: Promise<import("./secrets.ts").SecretStore> | undefined;
  const store = () =>
    (loaded ??= import("./secrets.ts").then((m) => new m.SecretStore(homePaths().secrets)));
  return {
    where: "the local secret store",
    set: async (scope, name, value) => (await store()).set(scope, name, value),
    list: async (scope) => (await store()).list(scope),
    delete: async (scope, name) => (await store()).delete(scope, name),
    missing: async (scope, keys) => (await store()).missing(scope, keys),
    fingerprint: async (scope, keys) => (await store()).fingerprint(scope, keys),
  };
}

const daemon: DaemonControl = {
  start: async () => {
    const d = await ensureDaemon();
    return { pid: d.pid, url: d.url, started: d.started };
  },
  stop: (_config, opts) => stopDaemon(undefined, opts.stopApps),
  status: () => daemonStatus(),
  run: async () => (await import("./server/daemon.ts")).runDaemon(),
};

export const provider: BackendProvider = {
  name: "local",
  open,
  secrets,
  daemon,
  inProcess: async (_config, opts) => (await import("./serve.ts")).serveInProcess(opts),
};
