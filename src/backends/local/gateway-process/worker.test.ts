import { fork } from "node:child_process";
import { EventEmitter } from "node:events";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { buildRuntime } from "../../runtime-build.ts";
import { homePaths } from "../home.ts";
import { Store } from "../store.ts";
import { GATEWAY_PROCESS_ENTRY } from "./entry.ts";
import { WORKER_ENV, helloAt, socketPath } from "./protocol.ts";
import { tellPrimary } from "./worker.ts";

/** A worker's `process` whose channel to a primary just died: a send fails as node's does. */
function dyingChannel(connected: boolean) {
  const proc = new EventEmitter() as EventEmitter & {
    connected: boolean;
    send: NodeJS.Process["send"];
    sent: number;
  };
  proc.connected = connected;
  proc.sent = 0;
  proc.send = ((_m: unknown, ...rest: unknown[]) => {
    proc.sent++;
    const callback = rest.find((r) => typeof r === "function") as ((e: Error) => void) | undefined;
    const epipe = Object.assign(new Error("write EPIPE"), { code: "EPIPE" });
    // node: to the callback if there is one, else the 'error' event (uncaught: the end).
    if (callback) callback(epipe);
    else proc.emit("error", epipe);
    return false;
  }) as NodeJS.Process["send"];
  return proc;
}

describe("tellPrimary", () => {
  it("survives a send that races its primary's death (EPIPE)", () => {
    const proc = dyingChannel(true);
    expect(() => tellPrimary(proc, { t: "ready" })).not.toThrow();
    expect(proc.sent).toBe(1);
  });

  it("sends nothing once the channel is closed", () => {
    const proc = dyingChannel(false);
    expect(tellPrimary(proc, { t: "ready" })).toBe(false);
    expect(proc.sent).toBe(0);
  });
});

describe("a worker whose primary dies before it serves", () => {
  /** This test is its primary: it forks it, `sends` it these, and dies (disconnects). */
  const orphanedAfter = async (sends: { t: string; id?: number; routes?: [] }[]) => {
    const home = mkdtempSync(join(tmpdir(), "caravan-worker-"));
    const paths = homePaths(home);
    new Store(paths.db).close(); // the database a worker opens for tokens
    const entry = join(await buildRuntime(paths.runtime), `${GATEWAY_PROCESS_ENTRY}.js`);
    const worker = fork(entry, [], {
      env: { ...process.env, CARAVAN_HOME: home, [WORKER_ENV]: "1" },
      stdio: ["ignore", "ignore", "pipe", "ipc"],
    });
    let output = "";
    worker.stderr!.on("data", (d: Buffer) => (output += d.toString()));
    const exited = new Promise<void>((resolve) => worker.once("exit", () => resolve()));
    try {
      await new Promise<void>((resolve) =>
        worker.on("message", (m: { t: string }) => m.t === "ready" && resolve()),
      );
      for (const m of sends) {
        const done = new Promise<void>((resolve) =>
          worker.on("message", (r: { t: string; id?: number }) => r.id === m.id && resolve()),
        );
        worker.send(m);
        if (m.id !== undefined) await done;
      }
      worker.disconnect();
      await exited;
      // No election held, no successor spawned (its output would go to gateway.log).
      const elections = readdirSync(home).filter((f) => f.startsWith("gateway."));
      return { output, elections };
    } finally {
      worker.kill("SIGKILL");
      // Without the fix, the successor it spawned answers on the socket: ended here.
      const successor = await helloAt(socketPath(home));
      if (successor) process.kill(successor.pid, "SIGTERM");
      rmSync(home, { recursive: true, force: true });
    }
  };

  it("retires before it was given the state, instead of spawning a successor that would serve nothing", async () => {
    const { output, elections } = await orphanedAfter([]);
    expect(output).toContain("retiring: its primary died before it was given the state");
    expect(elections).toEqual([]);
  }, 30_000);

  it("retires when its primary had not answered yet (a successor that died starting: its spawner tries again), instead of an election of its own", async () => {
    const { output, elections } = await orphanedAfter([{ t: "sync", id: 1, routes: [] }]);
    expect(output).toContain("retiring: its primary died before it answered");
    expect(elections).toEqual([]);
  }, 30_000);
});
