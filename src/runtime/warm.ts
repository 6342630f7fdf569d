/**
 * A warm process's life before it belongs to an app (see WARM_ENV in protocol.ts): it boots,
 * imports the preload modules (frameworks recent deploys used; never user code), reports
 * itself warm and waits. On assignment it becomes what a cold process of the app would have
 * been from its start: same environment (secrets arrive only now, over IPC, and never appear
 * in /proc/<pid>/environ before), same working directory, stdout and stderr on the app's log,
 * and (Linux) the same /proc/<pid>/environ, rewritten in place, as tools find apps by it. What a
 * process cannot change after it started is the same already: the control plane spawns warm
 * processes with a cold one's node, flags and argv (so also its process title).
 */
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { pathToFileURL } from "node:url";
import {
  WARM_ENV,
  environBytes,
  type PlaneMessage,
  type RuntimeMessage,
  type WarmAssignment,
} from "./protocol.ts";

const send = (message: RuntimeMessage) => process.send?.(message);

/** Whether this process was started warm (and must wait for an assignment). */
export function isWarmStart(): boolean {
  return process.env[WARM_ENV] !== undefined;
}

/** Boots, preloads, waits for the assignment and applies it; then the runtime runs as usual. */
export async function warmUntilAssigned(): Promise<void> {
  const preload = JSON.parse(process.env[WARM_ENV] ?? "[]") as string[];
  // Until assigned, the process is the pool's: it goes when its control plane does.
  const orphaned = () => process.exit(0);
  process.on("disconnect", orphaned);
  const assigned = new Promise<WarmAssignment>((resolve) => {
    const onMessage = (m: PlaneMessage) => {
      if (m?.type !== "assign") return;
      process.off("message", onMessage);
      resolve(m);
    };
    process.on("message", onMessage);
  });
  for (const module of preload) {
    try {
      await import(pathToFileURL(module).href);
    } catch (e) {
      // A module that throws here could throw differently with the app's environment: such
      // a process is never handed out (the pool stops preloading the module).
      send({ type: "warm-failed", module, error: (e as Error)?.message ?? String(e) });
      process.exit(1);
    }
  }
  send({ type: "warm", rss: process.memoryUsage.rss() });
  const assignment = await assigned;
  process.off("disconnect", orphaned);
  takeOutput(assignment.logFile);
  // The environment a cold process would have had, exactly: nothing of the warm one stays.
  for (const key of Object.keys(process.env)) delete process.env[key];
  Object.assign(process.env, assignment.env);
  rewriteEnviron(assignment.env);
  process.chdir(assignment.cwd);
}

/**
 * Writes `env` over the environment block the kernel shows as /proc/self/environ (its bounds
 * are in /proc/self/stat), padded with NULs. Safe once process.env was reset above: libc then
 * points at copies, nothing at the old block. The warm process reserved the room for it
 * (WARM_ROOM_ENV); where /proc is missing the block just keeps the warm variables.
 */
function rewriteEnviron(env: Record<string, string>): void {
  let bounds: number[];
  try {
    const stat = readFileSync("/proc/self/stat", "utf8");
    // Fields 50 and 51 (env_start, env_end); the list resumes at field 3 after the name.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    bounds = [Number(fields[47]), Number(fields[48])];
  } catch {
    return;
  }
  const [start, end] = bounds as [number, number];
  // node's spawn appends its IPC variables to a child's block (node then hides them from
  // process.env): a cold process's block ends with them, so this one's does too.
  const channel = readFileSync("/proc/self/environ", "latin1")
    .split("\0")
    .filter((v) => v.startsWith("NODE_CHANNEL_"))
    .map((v) => v.split("=") as [string, string]);
  const vars = { ...env, ...Object.fromEntries(channel) };
  if (!(start > 0 && end > start) || environBytes(vars) > end - start) return;
  const block = Buffer.alloc(end - start);
  let at = 0;
  for (const [k, v] of Object.entries(vars)) at += block.write(`${k}=${v}\0`, at);
  try {
    const fd = openSync("/proc/self/mem", "r+");
    try {
      writeSync(fd, block, 0, block.length, start);
    } finally {
      closeSync(fd);
    }
  } catch {
    // A kernel that refuses it: the app runs the same, only the block shows the warm variables.
  }
}

/**
 * Points descriptors 1 and 2 at the app's log, as a cold process's are from its spawn (so a
 * child the app starts with inherited stdio, and node's own fatal errors, land there too):
 * POSIX gives the lowest free descriptor to the next open, and nothing else opens files in
 * this process while it waits.
 */
function takeOutput(logFile: string): void {
  for (const fd of [1, 2]) {
    closeSync(fd);
    const got = openSync(logFile, "a");
    if (got !== fd) throw new Error(`could not move descriptor ${fd} to ${logFile} (got ${got})`);
  }
}
