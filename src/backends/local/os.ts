import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import type { Endpoints } from "../contract.ts";

/**
 * The kernel's start time of a process (field 22 of /proc/<pid>/stat), so a recorded pid
 * that was reused by an unrelated process is never mistaken for our app.
 */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // The command name (field 2) may contain spaces; fields after it are space-separated.
    const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    if (rest[0] === "Z") return undefined; // a zombie is dead
    return rest[19];
  } catch {
    return undefined;
  }
}

export function isAlive(pid: number, startTime: string): boolean {
  const t = processStartTime(pid);
  if (t !== undefined) return t === startTime;
  if (process.platform === "linux") return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Signals the process group of one of our processes (apps run in their own group, so a
 * shell's children go too). `startTime` identifies the process: once it has exited, its pid
 * may belong to an unrelated process — then nothing is signalled (the kernel never reuses a
 * pid while a group of that id has members, so ours is empty by then). `""` skips the check.
 */
export function signalGroup(pid: number, startTime: string, signal: NodeJS.Signals): void {
  const current = processStartTime(pid);
  // "" = unknown, or a child not reaped yet (its pid cannot have been reused): no check.
  if (startTime && current !== undefined && current !== startTime) return; // reused: not ours
  try {
    process.kill(-pid, signal);
  } catch {
    // No group: signal the process itself, only while it is still the one we started.
    if (current === undefined) return;
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

/**
 * A port nothing listens on right now, avoiding `exclude`. Taken below the kernel's ephemeral
 * range when there is room: a port handed out now is bound a little later (by an app), and
 * in between an outgoing connection (the gateway's to a replica, say) could otherwise be
 * given the same port as its local end.
 */
export async function freePort(exclude: Set<number>): Promise<number> {
  const [low] = ephemeralRange();
  const pool = low > PORTS_FROM + 1000 ? low - PORTS_FROM : 0;
  for (let attempt = 0; attempt < 50; attempt++) {
    const wanted = pool ? PORTS_FROM + Math.floor(Math.random() * pool) : 0;
    if (exclude.has(wanted)) continue;
    const port = await new Promise<number | undefined>((resolve) => {
      const srv = createServer();
      srv.unref();
      srv.on("error", () => resolve(undefined)); // taken: try another
      srv.listen(wanted, "127.0.0.1", () => {
        const { port } = srv.address() as { port: number };
        srv.close(() => resolve(port));
      });
    });
    if (port !== undefined && !exclude.has(port)) return port;
  }
  throw new Error("could not find a free port on 127.0.0.1");
}

/** Where freePort looks first (up to the ephemeral range). */
const PORTS_FROM = 20_000;

let range: [number, number] | undefined;
function ephemeralRange(): [number, number] {
  if (!range) {
    try {
      const [lo, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
        .trim()
        .split(/\s+/)
        .map(Number);
      range = lo && hi ? [lo, hi] : [32768, 60999];
    } catch {
      range = [49152, 65535]; // the IANA dynamic range (macOS, BSD)
    }
  }
  return range;
}

/** An app's endpoints: the gateway's public and internal listeners, both on loopback. */
export function endpointsFor(ports: { public: number; internal: number }): Endpoints {
  return {
    endpoint: `http://127.0.0.1:${ports.public}`,
    internalEndpoint: `http://127.0.0.1:${ports.internal}`,
  };
}
