/** DESIGN §3.3: a command app is probed over HTTP, or with `readiness: { tcp: true }` by TCP connect. */
import { describe, expect, it } from "vitest";
import { useSandbox } from "./helpers.ts";
import { deploy, fixture } from "./support.ts";

describe("readiness", () => {
  const sb = useSandbox();

  it("readies a command app on TCP connect with readiness: { tcp: true }", async () => {
    const r = await deploy(sb, [fixture("readiness/tcp.ts")]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.by["raw-tcp"]).toMatchObject({ status: "ready" });
  });
});
