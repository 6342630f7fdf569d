import { mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { PendingRequests, socketPath } from "./protocol.ts";

describe("socketPath", () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it("is in the home, or for a home too deep for a unix socket, in a private directory a listener can use", async () => {
    const base = mkdtempSync(join(tmpdir(), "caravan-sock-"));
    dirs.push(base);
    expect(socketPath(base)).toBe(join(base, "gateway.sock"));

    const deep = join(base, "d".repeat(60), "e".repeat(60));
    mkdirSync(deep, { recursive: true });
    const path = socketPath(deep);
    expect(Buffer.byteLength(path)).toBeLessThanOrEqual(107);
    expect(statSync(join(path, "..")).mode & 0o077).toBe(0);
    expect(socketPath(deep)).toBe(path); // the same for the gateway and its control plane
    expect(socketPath(`${deep}x`)).not.toBe(path);
    // The path a listener gets for the deep home works (it would fail with EINVAL in the home).
    const server = createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(path, resolve);
    });
    await new Promise((r) => server.close(r));
  });
});

describe("PendingRequests", () => {
  it("settles each request by the done with its id, and everything when the other side is gone", async () => {
    const pending = new PendingRequests();
    const settled: string[] = [];
    const track = (name: string, p: Promise<void>) =>
      p.then(
        () => settled.push(`${name} ok`),
        (e: Error) => settled.push(`${name} ${e.message}`),
      );
    const all = [
      track("1", pending.wait(1)),
      track("2", pending.wait(2)),
      track("3", pending.wait(3)),
    ];
    pending.done({ id: 2, error: "port in use" });
    pending.done({ id: 1 });
    pending.done({ id: 9 }); // no one waits on it
    await new Promise((r) => setImmediate(r));
    expect(settled).toEqual(["2 port in use", "1 ok"]);
    pending.gone();
    await Promise.all(all);
    expect(settled).toEqual(["2 port in use", "1 ok", "3 ok"]);
    pending.done({ id: 3, error: "late" }); // settled already: nothing happens
  });
});
