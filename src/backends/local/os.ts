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

/**
 * Of `ports`, those some process listens on at an address other than loopback (0.0.0.0, ::,
 * a LAN address), with that address: read from the kernel's socket tables (/proc/net/tcp and
 * tcp6; an empty map where there are none). A replica listening there answers without the
 * gateway's auth to anyone who can reach this machine.
 */
export function listenersBeyondLoopback(ports: Iterable<number>): Map<number, string> {
  const wanted = new Set(ports);
  const found = new Map<number, string>();
  if (wanted.size === 0) return found;
  for (const table of ["tcp", "tcp6"]) {
    let text: string;
    try {
      text = readFileSync(`/proc/net/${table}`, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const [, local, , state] = line.trim().split(/\s+/);
      if (state !== "0A" || !local) continue; // 0A: LISTEN
      const [hex, portHex] = local.split(":");
      const port = parseInt(portHex ?? "", 16);
      if (!hex || !wanted.has(port)) continue;
      const address = socketAddress(hex);
      if (address !== undefined) found.set(port, `${address}:${port}`);
    }
  }
  return found;
}

/** A /proc/net address (32-bit words in host order, little-endian here), or undefined for loopback. */
function socketAddress(hex: string): string | undefined {
  const v4 = (word: string) =>
    [6, 4, 2, 0].map((i) => parseInt(word.slice(i, i + 2), 16)).join(".");
  if (hex.length === 8) {
    const ip = v4(hex);
    return ip.startsWith("127.") ? undefined : ip;
  }
  if (/^0{32}$/.test(hex)) return "[::]";
  if (hex === "00000000000000000000000001000000") return undefined; // ::1
  if (hex.startsWith("0000000000000000FFFF0000")) {
    const ip = v4(hex.slice(24));
    return ip.startsWith("127.") ? undefined : `[::ffff:${ip}]`;
  }
  return "[an IPv6 address]";
}

/** An app's endpoints: the gateway's public and internal listeners, both on loopback. */
export function endpointsFor(ports: { public: number; internal: number }): Endpoints {
  return {
    endpoint: `http://127.0.0.1:${ports.public}`,
    internalEndpoint: `http://127.0.0.1:${ports.internal}`,
  };
}
