import { describe, expect, it } from "vitest";
import { getText, useSandbox } from "./helpers.ts";

describe("the seed's example: app2 calls app1", () => {
  const sb = useSandbox();

  it("deploys both, app2 reaches app1 through its endpoint, and a redeploy changes nothing", async () => {
    const first = await sb.run(["deploy", "examples/app-calling-app.ts", "--json"]);
    expect(first.code, first.stderr).toBe(0);
    const { deployments } = JSON.parse(first.stdout);
    expect(deployments.map((d: { name: string; status: string }) => [d.name, d.status])).toEqual([
      ["app1-is-called-by-app2", "ready"],
      ["app2-calls-app1", "ready"],
    ]);
    const [app1, app2] = deployments;
    expect(await getText(`${app2.endpoint}/greeting/World`)).toEqual({
      status: 200,
      body: "Hello, World!",
    });
    expect((await getText(`${app2.endpoint}/app1-endpoint`)).body).toBe(app1.internalEndpoint);

    const again = await sb.run(["deploy", "examples/app-calling-app.ts", "--json"]);
    expect(again.code, again.stderr).toBe(0);
    const second = JSON.parse(again.stdout).deployments;
    expect(second.map((d: { status: string }) => d.status)).toEqual(["unchanged", "unchanged"]);
    expect(second.map((d: { endpoint: string }) => d.endpoint)).toEqual([
      app1.endpoint,
      app2.endpoint,
    ]);
  });
});
