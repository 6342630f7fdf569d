import { fork, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { homePaths } from "../home.ts";
import { freePort } from "../os.ts";
import { Store } from "../store.ts";
import { GatewayProcess } from "./client.ts";
import { sendToWorker } from "./primary.ts";
import { PROTOCOL, readMessages, send, socketPath, type FromGateway } from "./protocol.ts";

const dir = mkdtempSync(join(tmpdir(), "caravan-primary-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A real forked worker that closes its channel, then lives on a little (as a dying one does). */
function dyingWorker(): ChildProcess {
  const exec = join(dir, "dying.mjs");
  writeFileSync(exec, "process.disconnect(); setTimeout(() => {}, 300);\n");
  return fork(exec, [], { silent: true });
}

describe("sendToWorker", () => {
  it("sends nothing to a worker whose channel closed before it exited, and raises nothing", async () => {
    const worker = dyingWorker();
    const errors: Error[] = [];
    worker.on("error", (e) => errors.push(e));
    const exited = new Promise((resolve) => worker.once("exit", resolve));
    await new Promise((resolve) => worker.once("disconnect", resolve));
    expect(worker.exitCode).toBe(null); // the gap the primary used to send in
    const failed: Error[] = [];
    expect(sendToWorker(worker, { t: "tokens", id: 1 }, (e) => failed.push(e))).toBe(false);
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(failed).toEqual([]);
    expect(errors).toEqual([]);
    // What a plain send does there: an 'error' on the worker (uncaught, it ended the primary).
    worker.send({ t: "tokens", id: 2 });
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(errors.map((e) => (e as NodeJS.ErrnoException).code)).toEqual([
      "ERR_IPC_CHANNEL_CLOSED",
    ]);
    await exited;
  });

  it("hands a send that fails to its callback, not to the worker's 'error' event", () => {
    const errors: Error[] = [];
    const fake = {
      connected: true,
      send: (_m: unknown, callback?: (e: Error | null) => void) => {
        callback?.(new Error("channel closed"));
        return false;
      },
    } as unknown as ChildProcess;
    expect(sendToWorker(fake, { t: "tokens", id: 1 }, (e) => errors.push(e))).toBe(true);
    expect(errors.map((e) => e.message)).toEqual(["channel closed"]);
  });
});

describe("the primary's wakes (the real gateway process)", () => {
  it("fails the wakes asked over a connection a newer control plane replaced, and asks the new one", async () => {
    const home = mkdtempSync(join(tmpdir(), "caravan-gwwake-"));
    const store = new Store(homePaths(home).db);
    const options = { requiresAuth: false, requestTimeoutMs: 0 };
    const first = new GatewayProcess(homePaths(home), store, {
      wake: async () => {},
      recordSpan: () => {},
    });
    const woken: string[] = [];
    const second = new GatewayProcess(homePaths(home), store, {
      wake: (app) => {
        woken.push(app);
        return new Promise(() => {}); // still starting it
      },
      recordSpan: () => {},
    });
    const aborts = new AbortController();
    try {
      const taken = new Set<number>();
      const pub = await freePort(taken);
      taken.add(pub);
      const ports = { public: pub, internal: await freePort(taken) };
      await first.open("p/d/app", ports, options); // no replica: a request asks for a wake
      first.detach();

      // A control plane that asks for nothing and answers nothing (wedged).
      const wedged = createConnection(socketPath(home));
      const wakes: string[] = [];
      readMessages<FromGateway>(wedged, (m) => m.t === "wake" && wakes.push(m.app));
      send(wedged, { t: "hello", protocol: PROTOCOL });
      const url = `http://127.0.0.1:${ports.internal}/`;
      // Bounded: without the fix it waited for good.
      const waiting = fetch(url, {
        signal: AbortSignal.any([aborts.signal, AbortSignal.timeout(10_000)]),
      });
      for (let i = 0; i < 250 && wakes.length === 0; i++)
        await new Promise((r) => setTimeout(r, 20));
      expect(wakes).toEqual(["p/d/app"]);

      // A restarted control plane replaces it: the request waiting on the old one fails now...
      await second.adopt();
      const res = await waiting;
      expect(res.status).toBe(503);
      expect(await res.text()).toContain("replaced");
      // ...and a new request for the app asks the new one (it joined a dead wake before).
      void fetch(url, { signal: aborts.signal }).catch(() => {});
      for (let i = 0; i < 250 && woken.length === 0; i++)
        await new Promise((r) => setTimeout(r, 20));
      expect(woken).toEqual(["p/d/app"]);
      wedged.destroy();
    } finally {
      aborts.abort();
      await second.stop();
      store.close();
      rmSync(home, { recursive: true, force: true });
    }
  }, 60_000);
});

describe("a gateway's start (the real gateway process)", () => {
  it("clears the election files an earlier succession left", async () => {
    const home = mkdtempSync(join(tmpdir(), "caravan-gwstart-"));
    const store = new Store(homePaths(home).db);
    // Orphans a control plane ended before their successor answered leave theirs behind.
    writeFileSync(join(home, "gateway.successor-123-0"), "{}");
    writeFileSync(join(home, "gateway.successor-123-1"), "{}");
    const gateway = new GatewayProcess(homePaths(home), store, {
      wake: async () => {},
      recordSpan: () => {},
    });
    try {
      const taken = new Set<number>();
      const pub = await freePort(taken);
      taken.add(pub);
      const ports = { public: pub, internal: await freePort(taken) };
      await gateway.open("p/d/app", ports, { requiresAuth: false, requestTimeoutMs: 0 });
      expect(readdirSync(home).filter((f) => f.startsWith("gateway.successor-"))).toEqual([]);
    } finally {
      await gateway.stop();
      store.close();
      rmSync(home, { recursive: true, force: true });
    }
  }, 60_000);
});
