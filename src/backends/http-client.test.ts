/**
 * The API client's bound on reads: a control plane that accepts a request and never answers
 * (stuck) fails a `status` with what to do, instead of hanging it; changes and long polls are
 * not cut by it. A loopback server stands for the control plane.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { HttpBackend } from "./http-client.ts";

describe("HttpBackend's read timeout", () => {
  let server: Server | undefined;
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    server = undefined;
  });

  /** A control plane that answers each request after `delayMs` (never, when undefined). */
  async function controlPlane(delayMs: number | undefined, body: unknown): Promise<string> {
    server = createServer((_req, res) => {
      if (delayMs === undefined) return;
      setTimeout(() => res.end(JSON.stringify(body)), delayMs).unref();
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  it("fails a read the control plane never answers, saying what to do", async () => {
    const url = await controlPlane(undefined, {});
    const backend = new HttpBackend(url, "token", undefined, 200);
    await expect(backend.status({ project: "p", domain: "d" })).rejects.toMatchObject({
      code: "SERVER_UNREACHABLE",
      message: expect.stringMatching(
        /did not answer within 0\.2 s.*caravan server stop --keep-apps/,
      ),
    });
  });

  it("does not cut a change, nor a long poll within its wait", async () => {
    const run = { id: "r1", status: "succeeded" };
    const url = await controlPlane(400, { run });
    const backend = new HttpBackend(url, "token", undefined, 200);
    await expect(backend.startRun({} as never)).resolves.toEqual(run);
    await expect(backend.getRun("r1", { waitMs: 1_000 })).resolves.toEqual(run);
    await expect(backend.getRun("r1")).rejects.toMatchObject({ code: "SERVER_UNREACHABLE" });
  });
});
