import { createServer as createHttpServer, type Server as HttpServer } from "node:http";
import { createServer, type Server, type Socket } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { probeHttp } from "./probe.ts";

const servers: (Server | HttpServer)[] = [];
const sockets = new Set<Socket>();
afterEach(async () => {
  for (const socket of sockets) socket.destroy();
  for (const s of servers.splice(0)) {
    (s as HttpServer).closeAllConnections?.();
    await new Promise((r) => s.close(r));
  }
});

function listen<S extends Server | HttpServer>(server: S): Promise<number> {
  servers.push(server);
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve((server.address() as { port: number }).port)),
  );
}

describe("probeHttp", () => {
  it("with a path, waits for a 2xx there (a 503 is not ready)", async () => {
    let healthy = false;
    let probes = 0;
    const port = await listen(
      createHttpServer((req, res) => {
        if (req.url === "/healthz") probes++;
        if (probes >= 3) healthy = true;
        res.statusCode = healthy && req.url === "/healthz" ? 200 : 503;
        res.end();
      }),
    );
    expect(await probeHttp(port, { path: "/healthz", stop: () => false })).toBe(true);
    expect(probes).toBe(3);
  });

  it("with tcpOnly, is ready on connect even when the server never answers HTTP", async () => {
    // Accepts connections, never answers.
    const port = await listen(createServer((socket) => sockets.add(socket)));
    expect(await probeHttp(port, { tcpOnly: true, stop: () => false })).toBe(true);
    // Without it, an HTTP answer is needed: the probe keeps going until told to stop.
    let rounds = 0;
    const stop = () => ++rounds > 2;
    expect(await probeHttp(port, { stop })).toBe(false);
  }, 20_000);
});
