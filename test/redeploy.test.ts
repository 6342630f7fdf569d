/**
 * DESIGN §3.6 and §3.8: an unchanged environment is not restarted (unless --force), a changed
 * one is restarted alone, and endpoints survive every redeploy.
 */
import { describe, expect, it } from "vitest";
import { eventually, useSandbox } from "./helpers.ts";
import {
  appProcesses,
  deploy,
  fixture,
  get,
  pidsOf,
  status,
  type DeploymentJSON,
} from "./support.ts";

const PAIR = fixture("redeploy/pair.ts");
const endpoints = (ds: DeploymentJSON[]) => ds.map((d) => [d.name, d.endpoint, d.internalEndpoint]);

describe("redeploys", () => {
  const sb = useSandbox();

  it("restart nothing when nothing changed, everything with --force; endpoints stay", async () => {
    const first = await deploy(sb, [PAIR]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.deployments.map((d) => d.status)).toEqual(["ready", "ready"]);
    const before = pidsOf(await status(sb));
    expect(before.alpha).toHaveLength(1);
    expect(before.beta).toHaveLength(1);

    const again = await deploy(sb, [PAIR]);
    expect(again.code, again.stderr).toBe(0);
    expect(again.deployments.map((d) => d.status)).toEqual(["unchanged", "unchanged"]);
    expect(again.deployments.map((d) => d.revision)).toEqual(
      first.deployments.map((d) => d.revision),
    );
    expect(endpoints(again.deployments)).toEqual(endpoints(first.deployments));
    expect(pidsOf(await status(sb))).toEqual(before);

    const forced = await deploy(sb, [PAIR, "--force"]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.deployments.map((d) => d.status)).toEqual(["ready", "ready"]);
    expect(endpoints(forced.deployments)).toEqual(endpoints(first.deployments));
    const after = pidsOf(await status(sb));
    expect(after.alpha![0]).not.toBe(before.alpha![0]);
    expect(after.beta![0]).not.toBe(before.beta![0]);
    // The old processes go: one process per app. (A deploy waits up to 5 s for them to drain
    // and stop, then returns while they finish: on a loaded machine, one may still be exiting.)
    for (const name of ["alpha", "beta"] as const)
      await eventually(() => appProcesses(sb, name).join() === after[name]!.join());
    expect(await get(`${forced.by.beta!.endpoint}/`)).toEqual({ status: 200, body: "hi+hello" });
  });

  it("restart only the app whose spec changed; its dependent keeps running", async () => {
    const first = await deploy(sb, [PAIR]);
    expect(first.code, first.stderr).toBe(0);
    const p0 = pidsOf(await status(sb));

    // beta's envVars change: beta restarts, alpha does not.
    const betaChanged = await deploy(sb, [PAIR], { BETA_GREETING: "salut" });
    expect(betaChanged.code, betaChanged.stderr).toBe(0);
    expect(betaChanged.deployments.map((d) => [d.name, d.status])).toEqual([
      ["alpha", "unchanged"],
      ["beta", "ready"],
    ]);
    const p1 = pidsOf(await status(sb));
    expect(p1.alpha).toEqual(p0.alpha);
    expect(p1.beta![0]).not.toBe(p0.beta![0]);
    expect(await get(`${first.by.beta!.endpoint}/`)).toEqual({ status: 200, body: "salut+hello" });

    // alpha's envVars change: alpha restarts on the same endpoint, beta (unchanged) keeps
    // its process and reaches the new alpha.
    const alphaChanged = await deploy(sb, [PAIR], {
      BETA_GREETING: "salut",
      ALPHA_GREETING: "bonjour",
    });
    expect(alphaChanged.code, alphaChanged.stderr).toBe(0);
    expect(alphaChanged.deployments.map((d) => [d.name, d.status])).toEqual([
      ["alpha", "ready"],
      ["beta", "unchanged"],
    ]);
    const p2 = pidsOf(await status(sb));
    expect(p2.alpha![0]).not.toBe(p1.alpha![0]);
    expect(p2.beta).toEqual(p1.beta);
    expect(await get(`${first.by.alpha!.endpoint}/pid`)).toEqual({
      status: 200,
      body: String(p2.alpha![0]),
    });
    expect(await get(`${first.by.beta!.endpoint}/`)).toEqual({
      status: 200,
      body: "salut+bonjour",
    });

    expect(endpoints(alphaChanged.deployments)).toEqual(endpoints(first.deployments));
    expect(endpoints(betaChanged.deployments)).toEqual(endpoints(first.deployments));
    expect(appProcesses(sb, "alpha")).toEqual(p2.alpha);
    expect(appProcesses(sb, "beta")).toEqual(p2.beta);
  });
});
