/**
 * The programmatic API, as the seed's example uses it: `npx tsx examples/app-calling-app.ts`
 * runs init() + deploy(env2), which starts the control plane on its own and deploys the
 * closure (app1 first), then prints the deployment.
 */
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT, type Sandbox, useSandbox } from "./helpers.ts";
import { get, json, status } from "./support.ts";

const TSX = join(ROOT, "node_modules/tsx/dist/cli.mjs");

function runScript(sb: Sandbox, file: string) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      process.execPath,
      [TSX, file],
      { cwd: ROOT, env: sb.env, timeout: 90_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

describe("the programmatic API", () => {
  const sb = useSandbox();

  it("deploys the seed example with `tsx examples/app-calling-app.ts` and exits 0", async () => {
    const r = await runScript(sb, "examples/app-calling-app.ts");
    expect(r.code, r.stderr).toBe(0);
    const m =
      /^Deployed: app2-calls-app1 \(app\) ready at (http:\/\/127\.0\.0\.1:\d+) \[rev \w+\]$/m.exec(
        r.stdout,
      );
    expect(m, r.stdout).not.toBeNull();
    const endpoint = m![1]!;
    expect(await get(`${endpoint}/greeting/World`)).toEqual({
      status: 200,
      body: "Hello, World!",
    });

    // The script started a control plane under $CARAVAN_HOME that keeps both apps running.
    const st = await status(sb);
    expect(st["app1-is-called-by-app2"]).toMatchObject({ state: "ready" });
    expect(st["app2-calls-app1"]).toMatchObject({ state: "ready", endpoint });
    const server = json<{ running: boolean }>(await sb.run(["server", "status", "--json"]));
    expect(server.running).toBe(true);

    // Running it again changes nothing and still prints the deployment.
    const again = await runScript(sb, "examples/app-calling-app.ts");
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/^Deployed: app2-calls-app1 \(app\) unchanged at /m);
    expect((await status(sb))["app2-calls-app1"]!.pids).toEqual(st["app2-calls-app1"]!.pids);
  });
});
