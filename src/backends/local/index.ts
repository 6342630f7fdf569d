/**
 * The local backend, as the registry sees it: a control plane daemon on this machine (started
 * on demand) reached over HTTP, and a secret store in `$CARAVAN_HOME`.
 */
import type { ResolvedConfig } from "../../sdk/config.ts";
import type { Backend } from "../contract.ts";
import type { BackendProvider, SecretAccess } from "../registry.ts";
import { HttpBackend } from "./client.ts";
import { daemonStatus, ensureDaemon, ensureToken } from "./daemon.ts";
import { homePaths } from "./home.ts";
import { SecretStore } from "./secrets.ts";

async function open(
  config: ResolvedConfig,
  opts: { start: boolean },
): Promise<Backend | undefined> {
  if (config.controlPlane) {
    // A control plane at a configured address: not ours to start.
    return new HttpBackend(config.controlPlane, ensureToken(homePaths()));
  }
  if (opts.start) {
    const daemon = await ensureDaemon();
    return new HttpBackend(daemon.url, daemon.token);
  }
  const status = await daemonStatus();
  return status.running && status.url
    ? new HttpBackend(status.url, ensureToken(homePaths()))
    : undefined;
}

function secrets(): SecretAccess {
  const store = new SecretStore(homePaths().secrets);
  return {
    where: "the local secret store",
    set: async (scope, name, value) => store.set(scope, name, value),
    list: async (scope) => store.list(scope),
    delete: async (scope, name) => store.delete(scope, name),
    missing: async (scope, keys) => store.missing(scope, keys),
    fingerprint: async (scope, keys) => store.fingerprint(scope, keys),
  };
}

export const provider: BackendProvider = { name: "local", open, secrets };
