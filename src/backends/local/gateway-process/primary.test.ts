import cluster, { type Worker } from "node:cluster";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { sendToWorker } from "./primary.ts";

const dir = mkdtempSync(join(tmpdir(), "caravan-primary-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A real cluster worker that closes its channel, then lives on a little (as a dying one does). */
function dyingWorker(): Worker {
  const exec = join(dir, "dying.mjs");
  writeFileSync(exec, "process.disconnect(); setTimeout(() => {}, 300);\n");
  cluster.setupPrimary({ exec, silent: true });
  return cluster.fork();
}

describe("sendToWorker", () => {
  it("sends nothing to a worker whose channel closed before it exited, and raises nothing", async () => {
    const worker = dyingWorker();
    const errors: Error[] = [];
    worker.on("error", (e) => errors.push(e));
    const exited = new Promise((resolve) => worker.once("exit", resolve));
    await new Promise((resolve) => worker.once("disconnect", resolve));
    expect(worker.isDead()).toBe(false); // the gap the primary used to send in
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
      isConnected: () => true,
      send: (_m: unknown, callback?: (e: Error | null) => void) => {
        callback?.(new Error("channel closed"));
        return false;
      },
    } as unknown as Worker;
    expect(sendToWorker(fake, { t: "tokens", id: 1 }, (e) => errors.push(e))).toBe(true);
    expect(errors.map((e) => e.message)).toEqual(["channel closed"]);
  });
});
