/**
 * `caravan serve`'s control plane: a ControlPlane in the CLI's own process, with the run API
 * on a loopback port (so apps served here can run tasks). Its state is its own, under
 * `$CARAVAN_HOME/serve/<pid>`, apart from the daemon's, and removed when the session ends;
 * content-addressed runtime builds and the secret store are the home's.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import type { InProcessBackend } from "../registry.ts";
import { ControlPlane } from "./control-plane.ts";
import { ensureToken } from "./daemon.ts";
import { homePaths } from "./home.ts";
import { buildApi } from "./server/api.ts";

export async function serveInProcess(
  opts: { onStop?: () => void } = {},
): Promise<InProcessBackend> {
  const home = homePaths();
  const paths = {
    ...homePaths(join(home.home, "serve", String(process.pid))),
    runtime: home.runtime,
    secrets: home.secrets,
  };
  const plane = new ControlPlane(paths);
  const token = ensureToken(paths);
  const api = buildApi(plane, token, () => opts.onStop?.());
  plane.setApiAccess(await api.listen({ port: 0, host: "127.0.0.1" }), token);
  let stopping: Promise<void> | undefined;
  return {
    backend: plane,
    shutdown: () =>
      (stopping ??= (async () => {
        await api.close();
        await plane.shutdown({ stopApps: true });
        rmSync(paths.home, { recursive: true, force: true });
      })()),
  };
}
