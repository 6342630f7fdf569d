/**
 * What an app process is given and where it listens (issue 16): no CARAVAN_HOME (the admin
 * token lives there; an app has its scoped run token), a $HOST of loopback, `status` naming an
 * app that listens beyond it, a declared port refused for a local command app, and a start
 * timeout that says which port was probed.
 */
import { describe, expect, it } from "vitest";
import { useSandbox } from "./helpers.ts";
import { appProcesses, deploy, fixture, get, json, status } from "./support.ts";

const sb = useSandbox();
const APPS = fixture("hardening/apps.ts");

describe("an app's environment", () => {
  it("has no CARAVAN_HOME, a run token and $HOST=127.0.0.1, which it binds", async () => {
    const d = await deploy(sb, [APPS, "env-dump"]);
    expect(d.code, d.stderr).toBe(0);
    const env = JSON.parse((await get(d.by["env-dump"]!.endpoint!)).body) as Record<string, string>;
    expect(env.CARAVAN_HOME).toBeUndefined();
    expect(Object.values(env).some((v) => v.includes(sb.home + "/token"))).toBe(false);
    expect(env.CARAVAN_API_TOKEN).toMatch(/^run_/);
    expect(env.HOST).toBe("127.0.0.1");
    expect(appProcesses(sb, "env-dump")).toHaveLength(1);
    const s = await status(sb);
    expect(s["env-dump"]!.listensBeyondLoopback).toBeUndefined();
  });

  it("status shows an app that listens beyond loopback", async () => {
    const d = await deploy(sb, [APPS, "wide"]);
    expect(d.code, d.stderr).toBe(0);
    const s = await status(sb);
    const wide = s.wide!;
    expect(wide.listensBeyondLoopback).toHaveLength(1);
    expect(wide.listensBeyondLoopback![0]).toMatch(/^0\.0\.0\.0:\d+$/);
    const text = await sb.run(["status"]);
    expect(text.stderr).toContain(
      `wide listens beyond loopback (${wide.listensBeyondLoopback![0]})`,
    );
    expect(text.stderr).toContain("$HOST");
  });
});

describe("a command app's port", () => {
  it("a declared port is refused, saying to use $PORT", async () => {
    const r = await sb.run(["deploy", APPS, "fixed-port", "--json"]);
    expect(r.code).toBe(1);
    const { deployments } = json<{ deployments: { name: string; error: string | null }[] }>(r);
    const error = deployments.find((x) => x.name === "fixed-port")!.error!;
    expect(error).toContain("fixed-port declares port 9123");
    expect(error).toContain("$PORT");
  });

  it("a start timeout says which port was probed and that the app must listen on $PORT", async () => {
    const r = await sb.run(["deploy", APPS, "deaf", "--json"]);
    expect(r.code).toBe(1);
    const { deployments } = json<{ deployments: { name: string; error: string | null }[] }>(r);
    const error = deployments.find((x) => x.name === "deaf")!.error!;
    expect(error).toMatch(
      /was not ready within 2s \(timeouts\.start\): caravan probed 127\.0\.0\.1:(\d+) for an HTTP answer/,
    );
    const port = /127\.0\.0\.1:(\d+)/.exec(error)![1];
    expect(error).toContain(`must listen on the port in $PORT (${port} here)`);
  });
});
