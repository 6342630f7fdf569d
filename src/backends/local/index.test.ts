/**
 * The local backend's client meets a daemon its home recorded: one round trip per call (the
 * first call stands for the health check), and the checked way when that call is refused or
 * cannot connect. A loopback server stands for the daemon.
 */
import { createServer, type Server } from "node:http";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { ResolvedConfig } from "../../sdk/config.ts";
import { homePaths } from "./home.ts";
import { provider } from "./index.ts";
import { processStartTime } from "./os.ts";

const config: ResolvedConfig = { project: "p", domain: "d", backend: "local" };

describe("the local backend, with a daemon its home recorded", () => {
  let home: string;
  let saved: string | undefined;
  let server: Server | undefined;
  /** The requests the stand-in daemon saw: "GET /v1/status". */
  let seen: string[];

  beforeEach(() => {
    saved = process.env.CARAVAN_HOME;
    home = mkdtempSync(join(tmpdir(), "caravan-client-"));
    process.env.CARAVAN_HOME = home;
    seen = [];
  });
  afterEach(async () => {
    if (saved === undefined) delete process.env.CARAVAN_HOME;
    else process.env.CARAVAN_HOME = saved;
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
    server = undefined;
    rmSync(home, { recursive: true, force: true });
  });

  /** Records this process as the home's daemon at `url`, with a token. */
  function record(url: string): void {
    const paths = homePaths(home);
    writeFileSync(paths.token, "t".repeat(64), { mode: 0o600 });
    writeFileSync(
      paths.daemonFile,
      JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid), url }),
    );
  }

  /** A stand-in daemon answering every request with `status` and `body`. */
  async function daemon(status: number, body: unknown): Promise<string> {
    server = createServer((req, res) => {
      seen.push(`${req.method} ${req.url!.split("?")[0]}`);
      res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(body));
    });
    await new Promise<void>((r) => server!.listen(0, "127.0.0.1", r));
    return `http://127.0.0.1:${(server!.address() as AddressInfo).port}`;
  }

  it("asks it once per call: no health check first", async () => {
    record(await daemon(200, { environments: [] }));
    const backend = (await provider.open(config, { start: true }))!;
    expect(await backend.status(config)).toEqual([]);
    expect(seen).toEqual(["GET /v1/status"]);
    await backend.close?.();
  });

  it("a first call refused for its token takes the checked way, which says how to recover", async () => {
    const refused = { error: { code: "UNAUTHORIZED", message: "missing or wrong token" } };
    record(await daemon(401, refused));
    const backend = (await provider.open(config, { start: true }))!;
    await expect(backend.status(config)).rejects.toThrow(/token was replaced since it started/);
    expect(seen).toEqual(["GET /v1/status", "GET /v1/health"]);
  });

  it("a first read whose connection is reset (a daemon dying under it) takes the checked way, then is asked again", async () => {
    const url = await daemon(200, { environments: [] });
    let reset = true;
    server!.prependListener("request", (req) => {
      if (!reset) return;
      reset = false;
      req.socket.destroy(); // before the answer: the client sees ECONNRESET
    });
    record(url);
    const backend = (await provider.open(config, { start: true }))!;
    expect(await backend.status(config)).toEqual([]);
    expect(seen).toEqual(["GET /v1/status", "GET /v1/health", "GET /v1/status"]);
    await backend.close?.();
  });

  it("a recorded daemon that does not answer is reported, not taken for nothing running", async () => {
    const url = await daemon(200, {});
    await new Promise((r) => server!.close(r)); // nobody listens there any more
    server = undefined;
    record(url);
    const backend = (await provider.open(config, { start: false }))!;
    await expect(backend.status(config)).rejects.toMatchObject({ code: "SERVER_UNREACHABLE" });
  });
});
