/** Finding the processes of one CARAVAN_HOME (tests and benchmarks check that none is left). */
import { readdirSync, readFileSync } from "node:fs";

/** Live processes whose environment has CARAVAN_HOME=home. */
export function processesWithHome(home: string): number[] {
  const needle = `CARAVAN_HOME=${home}\0`;
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const environ = readFileSync(`/proc/${entry}/environ`, "latin1");
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      if ((environ + "\0").includes(needle)) pids.push(Number(entry));
    } catch {
      /* exited meanwhile, or not ours to read */
    }
  }
  return pids;
}
