import { createServer, type Server } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { Listeners } from "./listeners.ts";

describe("Listeners", () => {
  const servers: Server[] = [];
  afterEach(() => {
    for (const s of servers.splice(0)) s.close();
  });

  it("refuses a port in use (EADDRINUSE) instead of a socket a worker would listen on at a port of the kernel's choice", async () => {
    const taken = createServer();
    servers.push(taken);
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as { port: number }).port;
    const listeners = new Listeners();
    expect(() => listeners.get("127.0.0.1", port)).toThrow(
      expect.objectContaining({ code: "EADDRINUSE" }),
    );
    // A free port is bound and held (until no route uses it).
    const free = listeners.get("127.0.0.1", 0);
    expect(listeners.all()).toHaveLength(1);
    expect(listeners.all()[0]!.fd).toBe(free.fd);
    listeners.release(new Set());
    expect(listeners.all()).toEqual([]);
  });
});
