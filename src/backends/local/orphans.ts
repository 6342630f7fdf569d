/**
 * Processes of this home that no record names: a control plane that lost its `state.db`
 * (after `server stop --keep-apps`, say) would otherwise start a duplicate beside each of
 * them. Every process the supervisor starts carries the home's opaque id
 * (`CARAVAN_HOME_ID`) and the control plane that started it (`CARAVAN_SUPERVISOR`, its pid
 * and start time): one whose control plane is gone and that no record names is an orphan.
 * Linux only (/proc); elsewhere nothing is found.
 */
import { readdirSync, readFileSync } from "node:fs";
import { isAlive, processStartTime } from "./os.ts";

/** The variable naming the control plane (pid:start time) that started a process. */
export const SUPERVISOR_ENV = "CARAVAN_SUPERVISOR";

let self: string | undefined;
/** This process, as its children's `CARAVAN_SUPERVISOR`. */
export function supervisorId(): string {
  return (self ??= `${process.pid}:${processStartTime(process.pid) ?? ""}`);
}

export interface Orphan {
  pid: number;
  startTime: string;
  /** Its process group (apps run in their own: the group goes with it). */
  pgrp: number;
  /** Where it came from, as its environment says (CARAVAN_PROJECT, _DOMAIN, _APP_NAME). */
  project?: string;
  domain?: string;
  name?: string;
}

/**
 * Live processes marked with `homeId` whose control plane is no longer running, and that
 * neither are nor belong to (by process group) a process in `known`.
 */
export function findOrphans(homeId: string, known: ReadonlySet<number>): Orphan[] {
  if (process.platform !== "linux") return [];
  const mark = `CARAVAN_HOME_ID=${homeId}`;
  const out: Orphan[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === process.pid || known.has(pid)) continue;
    let vars: string[];
    let stat: string;
    try {
      vars = readFileSync(`/proc/${pid}/environ`, "latin1").split("\0");
      stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    } catch {
      continue; // gone meanwhile, or not ours to read
    }
    if (!vars.includes(mark)) continue;
    const env = new Map(
      vars.map((v) => [v.slice(0, v.indexOf("=")), v.slice(v.indexOf("=") + 1)] as const),
    );
    // Started by a control plane that still runs (this one, a `caravan serve`): not orphaned.
    const [spid, sstart] = (env.get(SUPERVISOR_ENV) ?? "").split(":");
    if (!spid || Number(spid) === process.pid || isAlive(Number(spid), sstart ?? "")) continue;
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (fields[0] === "Z") continue;
    const pgrp = Number(fields[2]);
    if (known.has(pgrp)) continue; // a child of a recorded app: it is handled with the app
    out.push({
      pid,
      startTime: fields[19] ?? "",
      pgrp,
      ...(env.has("CARAVAN_PROJECT") ? { project: env.get("CARAVAN_PROJECT")! } : {}),
      ...(env.has("CARAVAN_DOMAIN") ? { domain: env.get("CARAVAN_DOMAIN")! } : {}),
      ...(env.has("CARAVAN_APP_NAME") ? { name: env.get("CARAVAN_APP_NAME")! } : {}),
    });
  }
  return out;
}
