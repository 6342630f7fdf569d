/**
 * What the web console needs from the control plane's HTTP API (the CLI's API, bearer token):
 * an environment's description without values, scaling within bounds, start and restart,
 * events, and the live stream of changes (`/v1/watch`).
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { eventually, useSandbox, type Sandbox } from "./helpers.ts";
import { deploy, fixture, get, status } from "./support.ts";

const APPS = fixture("console/apps.ts");
const SCOPE = { project: "default", domain: "development" };

function api(sb: Sandbox) {
  const { url } = JSON.parse(readFileSync(join(sb.home, "daemon.json"), "utf8")) as { url: string };
  const token = readFileSync(join(sb.home, "token"), "utf8").trim();
  const headers = { authorization: `Bearer ${token}` };
  return {
    url,
    headers,
    get: async (path: string) => {
      const res = await fetch(`${url}${path}`, { headers });
      return { status: res.status, body: (await res.json()) as any };
    },
    post: async (path: string, body: unknown) => {
      const res = await fetch(`${url}${path}`, {
        method: "POST",
        headers: { ...headers, "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      return { status: res.status, body: (await res.json()) as any };
    },
  };
}

describe("the console's API", () => {
  const sb = useSandbox();

  it("describes an environment without values, scales within bounds, restarts and starts", async () => {
    expect((await deploy(sb, [APPS])).code).toBe(0);
    const a = api(sb);
    const q = new URLSearchParams(SCOPE);

    const web = await a.get(`/v1/environments/web?${q}`);
    expect(web.status).toBe(200);
    expect(web.body).toMatchObject({
      dependsOn: ["api"],
      dependents: [],
      inputs: [{ name: "greeting", kind: "string" }],
    });
    expect(JSON.stringify(web.body)).not.toContain("a-value-never-shown");
    expect((await a.get(`/v1/environments/api?${q}`)).body).toMatchObject({
      dependents: ["web"],
      scaling: { min: 1, max: 3 },
    });

    expect((await a.post("/v1/scale", { scope: SCOPE, name: "api", replicas: 3 })).status).toBe(
      200,
    );
    expect((await status(sb)).api!.pids).toHaveLength(3);
    const tooMany = await a.post("/v1/scale", { scope: SCOPE, name: "api", replicas: 4 });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error.message).toContain("from 1 to 3");
    await a.post("/v1/scale", { scope: SCOPE, name: "api", replicas: 1 });
    expect((await status(sb)).api!.pids).toHaveLength(1);

    const before = (await status(sb)).web!;
    expect((await a.post("/v1/restart", { scope: SCOPE, name: "web" })).status).toBe(200);
    const after = (await status(sb)).web!;
    expect(after.pids[0]).not.toBe(before.pids[0]);
    expect(await get(after.endpoint!)).toEqual({ status: 200, body: String(after.pids[0]) });

    await sb.run(["stop", "web"]);
    expect((await status(sb)).web!.state).toBe("stopped");
    expect((await a.post("/v1/restart", { scope: SCOPE, name: "web" })).status).toBe(400);
    expect((await a.post("/v1/start", { scope: SCOPE, name: "web" })).status).toBe(200);
    expect((await status(sb)).web!.state).toBe("ready");

    const events = (await a.get(`/v1/events?${q}`)).body.events as { name: string; type: string }[];
    const types = events.filter((e) => e.name === "api").map((e) => e.type);
    expect(types).toEqual(expect.arrayContaining(["deploy", "scale"]));
    expect(events.filter((e) => e.name === "web").map((e) => e.type)).toEqual(
      expect.arrayContaining(["deploy", "stopped"]),
    );
  });

  it("streams status and events as they change (/v1/watch)", async () => {
    expect((await deploy(sb, [APPS])).code).toBe(0);
    const a = api(sb);
    const abort = new AbortController();
    const res = await fetch(`${a.url}/v1/watch?${new URLSearchParams(SCOPE)}`, {
      headers: a.headers,
      signal: abort.signal,
    });
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const messages: { type: string; data: any }[] = [];
    const reading = (async () => {
      const decoder = new TextDecoder();
      let buffer = "";
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const type = /^event: (.*)$/m.exec(block)?.[1];
          const data = /^data: (.*)$/m.exec(block)?.[1];
          if (type && data) messages.push({ type, data: JSON.parse(data) });
        }
      }
    })().catch(() => {});
    try {
      const stateOf = (m: { data: any }, name: string) =>
        m.data.environments.find((e: { name: string }) => e.name === name)?.state;
      await eventually(() =>
        messages.some((m) => m.type === "status" && stateOf(m, "web") === "ready"),
      );
      // Changes made elsewhere (the CLI) arrive without asking.
      const stopping = sb.run(["stop", "web"]);
      await eventually(() =>
        messages.some((m) => m.type === "status" && stateOf(m, "web") === "stopped"),
      );
      await eventually(() =>
        messages.some(
          (m) => m.type === "event" && m.data.name === "web" && m.data.type === "stopped",
        ),
      );
      expect((await stopping).code).toBe(0);
      // While a dependency restarts after a crash, its dependent is shown degraded, with why.
      expect((await a.post("/v1/start", { scope: SCOPE, name: "web" })).status).toBe(200);
      const [pid] = (await status(sb)).api!.pids;
      process.kill(pid!, "SIGKILL");
      const healthOf = (m: { data: any }) =>
        m.data.environments.find((e: { name: string }) => e.name === "web")?.health;
      const degraded = await eventually(() =>
        messages.find((m) => m.type === "status" && healthOf(m)?.state === "degraded"),
      );
      expect(healthOf(degraded).reason).toContain("dependency api is");
      await eventually(() => {
        const last = messages.filter((m) => m.type === "status").at(-1)!;
        return stateOf(last, "api") === "ready" && healthOf(last)?.state === "healthy";
      });
    } finally {
      abort.abort();
      await reading;
    }
  });
});
