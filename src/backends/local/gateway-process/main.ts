/**
 * The local gateway as its own process (one per `$CARAVAN_HOME`), so that apps' endpoints
 * keep answering while the control plane is stopped, crashed, restarted or upgraded. The
 * control plane spawns it detached and adopts it like an app (client.ts); it serves what the
 * control plane last told it over the channel (protocol.ts), also while none is connected.
 *
 * A primary (primary.ts: the channel, the state, the listening sockets, the workers) and
 * workers (worker.ts: the gateway library accepting on the sockets they share), forked with
 * an IPC channel each; workers outlive their primary (succession.ts). Tokens and
 * session cookies are checked against the store's database itself (a verified value is
 * trusted for at most 1 s), and a login link is redeemed by a write to the same database:
 * both work without a control plane. Waking a scaled-to-zero app needs one: without it the
 * request gets 503.
 *
 * Started as `node main.js` (from dist/, or from the runtime bundle when caravan runs from its
 * sources) with `CARAVAN_HOME` set, and `CARAVAN_GATEWAY_WORKERS` (default: `defaultWorkers`).
 * The same entry is a worker with `CARAVAN_GATEWAY_WORKER` set, and a successor when spawned
 * with an IPC channel.
 */
import { existsSync } from "node:fs";
import { availableParallelism } from "node:os";
import { join } from "node:path";
import { caravanHome } from "../../home.ts";
import { homePaths } from "../home.ts";
import { defaultWorkers, runPrimary } from "./primary.ts";
import { inheritance } from "./succession.ts";
import { WORKER_ENV } from "./protocol.ts";
import { runWorker } from "./worker.ts";

// A home removed as this process started (a worker forked just then): nothing to serve, and
// homePaths would make the home again, where its control plane would then not see it gone.
if (!existsSync(join(caravanHome(), "state.db"))) process.exit(0);
const paths = homePaths(process.env.CARAVAN_HOME);
if (!process.env[WORKER_ENV]) {
  const wanted = Number(process.env.CARAVAN_GATEWAY_WORKERS);
  const workers =
    Number.isInteger(wanted) && wanted > 0
      ? Math.min(wanted, 64)
      : defaultWorkers(availableParallelism());
  await runPrimary(paths, workers, await inheritance());
} else {
  runWorker(paths);
}
