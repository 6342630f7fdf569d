import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
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
