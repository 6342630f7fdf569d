/**
 * What a new control plane finds of the previous one's processes (see `ControlPlane.recover`):
 * every process is recorded from the moment it is spawned (pid + kernel start time), so one
 * still running is either adopted as a replica of the revision its app serves, or stopped.
 * Never two copies: nothing is restarted beside a process that still serves.
 */
import type { Scope } from "../contract.ts";
import { homeId } from "../home.ts";
import { tcpOpen } from "../../sdk/probe.ts";
import { isAlive } from "./os.ts";
import { findOrphans } from "./orphans.ts";
import { keyOf, type ProcessRow, type Store } from "./store.ts";
import { adopt } from "./supervisor.ts";

/**
 * The recorded processes that still serve the current revision of their app (their port
 * answers), by environment key, to adopt. The rest are stopped: half-started, superseded,
 * prepared revisions and task workers. `closed` says the store may no longer be written.
 */
export async function survivingReplicas(
  store: Store,
  closed: () => boolean,
): Promise<Map<string, ProcessRow[]>> {
  const adopted = new Map<string, ProcessRow[]>();
  for (const p of store.allProcesses()) {
    if (!isAlive(p.pid, p.startTime)) {
      store.removeProcess(p.pid, p.startTime);
      continue;
    }
    const key = keyOf(p, p.name);
    const row = store.get(p, p.name);
    const current =
      row?.kind === "app" &&
      row.desired === "running" &&
      row.state !== "failed" &&
      row.revision === p.revision &&
      p.port > 0 &&
      (await tcpOpen(p.port, "127.0.0.1", 500));
    if (current) {
      adopted.set(key, [...(adopted.get(key) ?? []), p]);
    } else {
      // Half-started, superseded, a prepared revision, or a task worker: never keep it.
      stopRecorded(store, p, closed);
      store.event(p, p.name, "stray-stopped", `pid ${p.pid}`);
    }
  }
  return adopted;
}

/** Stops a recorded process and, once it is gone, its record. */
export function stopRecorded(store: Store, p: ProcessRow, closed: () => boolean): void {
  void adopt(p.pid, p.startTime)
    .stop(2000)
    .then(() => closed() || store.removeProcess(p.pid, p.startTime));
}

/**
 * Stops the processes of this home that no record names (the store was lost while they
 * ran, e.g. after `server stop --keep-apps`): they cannot be adopted (nothing says what
 * they serve), and a deploy would start a duplicate beside each. Each is logged (the
 * daemon's log) and recorded as an `orphan-stopped` event of the app it says it is.
 */
export async function stopOrphans(store: Store): Promise<void> {
  const known = new Set(store.allProcesses().map((p) => p.pid));
  const orphans = findOrphans(homeId(), known);
  const leaders = new Set(orphans.filter((o) => o.pid === o.pgrp).map((o) => o.pid));
  await Promise.all(
    orphans
      // A member of an orphaned group goes with its leader.
      .filter((o) => o.pid === o.pgrp || !leaders.has(o.pgrp))
      .map(async (o) => {
        const what = o.name ? `${o.project}/${o.domain}/${o.name}` : "unknown app";
        process.stderr.write(
          `stopping pid ${o.pid} (${what}): a process of this home that no record names (state.db was lost or replaced while it ran)\n`,
        );
        if (o.name && o.project && o.domain)
          store.event(o as Scope, o.name, "orphan-stopped", `pid ${o.pid}: no record of it`);
        await adopt(o.pid, o.startTime).stop(2000);
      }),
  );
}
