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

/** Signals a process group (apps run in their own group, so a shell's children go too). */
export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      /* already gone */
    }
  }
}

/** A port nothing listens on right now, avoiding `exclude`. */
export async function freePort(exclude: Set<number>): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const srv = createServer();
      srv.unref();
      srv.on("error", reject);
      srv.listen(0, "127.0.0.1", () => {
        const { port } = srv.address() as { port: number };
        srv.close(() => resolve(port));
      });
    });
    if (!exclude.has(port)) return port;
  }
  throw new Error("could not find a free port on 127.0.0.1");
}

/** An app's endpoints: the gateway's public and internal listeners, both on loopback. */
export function endpointsFor(ports: { public: number; internal: number }): Endpoints {
  return {
    endpoint: `http://127.0.0.1:${ports.public}`,
    internalEndpoint: `http://127.0.0.1:${ports.internal}`,
  };
}
