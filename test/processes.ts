/** Finding the processes of one CARAVAN_HOME (tests and benchmarks check that none is left). */
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";

/**
 * The variable that marks the processes a home starts (apps get its opaque id, not its path:
 * `homeId` in src/backends/home.ts).
 */
export const homeMark = (home: string) =>
  `CARAVAN_HOME_ID=${createHash("sha256").update(home).digest("hex").slice(0, 16)}`;

/**
 * Live processes whose environment has CARAVAN_HOME=home (the CLI, the daemon) or its id (apps,
 * and the warm pool's processes; `idleWarm: false` leaves out those not assigned to an app).
 */
export function processesWithHome(home: string, opts: { idleWarm?: boolean } = {}): number[] {
  const needle = `CARAVAN_HOME=${home}\0`;
  const mark = `${homeMark(home)}\0`;
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, "latin1");
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      const vars = environ + "\0";
      if (!vars.includes(needle) && !vars.includes(mark)) continue;
      if (opts.idleWarm === false && vars.includes("\0CARAVAN_WARM=")) continue;
      pids.push(Number(entry));
    } catch {
      /* exited meanwhile, or not ours to read */
    }
  }
  return pids;
}
