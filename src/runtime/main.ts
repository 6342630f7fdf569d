/**
 * The process every JS app runs in: loads the snapshot, finds its environment by name,
 * waits for the go-ahead, serves it, reports ready, and closes gracefully on SIGTERM.
 * Runs inside user processes: it never imports the control plane.
 */
import { pathToFileURL } from "node:url";
import { isAppEnvironment, type ServerHandle } from "../sdk/environment.ts";
import { shared } from "../sdk/global.ts";
import {
  RUNTIME_ENV,
  type PlaneMessage,
  type RuntimeConfig,
  type RuntimeMessage,
} from "./protocol.ts";

const send = (message: RuntimeMessage) => process.send?.(message);

function fatal(error: unknown): never {
  const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
  console.error(`[caravan runtime] ${text}`);
  send({ type: "failed", error: error instanceof Error ? error.message : String(error) });
  process.exit(1);
}

async function main(): Promise<void> {
  const raw = process.env[RUNTIME_ENV];
  if (!raw)
    fatal(new Error(`${RUNTIME_ENV} is not set: this program is started by caravan, not by hand`));
  const config = JSON.parse(raw) as RuntimeConfig;

  const state = shared();
  state.runtime = {
    name: config.name,
    project: config.project,
    domain: config.domain,
    endpoints: config.endpoints,
    publicEndpoints: config.publicEndpoints,
    inputs: config.inputs,
    loading: true,
  };
  const go = process.send
    ? new Promise<void>((resolve) => {
        process.on("message", (m: PlaneMessage) => m?.type === "start" && resolve());
      })
    : Promise.resolve();

  try {
    await import(pathToFileURL(config.entry).href);
  } catch (e) {
    fatal(e);
  }
  state.runtime.loading = false;
  const env = state.environments.find((e) => isAppEnvironment(e) && e.name === config.name);
  if (!env || !isAppEnvironment(env)) {
    fatal(new Error(`the snapshot declares no app named "${config.name}"`));
  }
  send({ type: "loaded" });
  await go;

  const context = () => ({
    port: config.port,
    host: config.host,
    inputs: { ...state.runtime!.inputs },
  });
  let handle: ServerHandle;
  try {
    // Start-up hooks run before the app serves its first request.
    for (const hook of env.startupHooks ?? []) await hook(context());
    handle = await env.serveOn(config.port, config.host);
  } catch (e) {
    fatal(e);
  }
  let closing = false;
  const shutdown = async () => {
    if (closing) return;
    closing = true;
    let code = 0;
    try {
      await handle.close();
    } catch (e) {
      console.error(`[caravan runtime] closing the server failed: ${(e as Error)?.message ?? e}`);
      code = 1;
    }
    // Shutdown hooks run once the server is closed (in-flight requests finished).
    for (const hook of env.shutdownHooks ?? []) {
      try {
        await hook(context());
      } catch (e) {
        console.error(`[caravan runtime] an onShutdown hook failed: ${(e as Error)?.stack ?? e}`);
        code = 1;
      }
    }
    process.exit(code);
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
  // If the control plane goes away, keep serving: the next one adopts this process.
  process.on("disconnect", () => {});
  send({ type: "ready", port: config.port });
  process.channel?.unref();
}

await main();
