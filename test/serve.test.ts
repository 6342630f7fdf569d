/**
 * `caravan serve`: foreground dev mode. Logs stream with the app's name as prefix, and Ctrl-C
 * (SIGINT) stops every app, dependents first, leaving no process and no state behind.
 */
import type { ChildProcess } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { eventually, useSandbox } from "./helpers.ts";
import { appProcesses, events, eventsFile, fixture, get, json, timeOf } from "./support.ts";

function capture(child: ChildProcess) {
  const out = { stdout: "", stderr: "" };
  child.stdout!.on("data", (d: Buffer) => (out.stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out.stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return { out, exited };
}

describe("caravan serve", () => {
  const sb = useSandbox();

  it("streams prefixed logs and, on SIGINT, stops everything (dependents first)", async () => {
    const child = sb.start(["serve", fixture("serve/pair.ts")], {
      env: { EVENTS_FILE: eventsFile(sb) },
    });
    const { out, exited } = capture(child);

    const endpoint = await eventually(
      () => /^frontend +(http:\/\/127\.0\.0\.1:\d+)$/m.exec(out.stderr)?.[1],
      45_000,
    );
    expect(out.stderr).toMatch(/^backend +http:\/\/127\.0\.0\.1:\d+$/m);
    expect(await get(`${endpoint}/hello`)).toEqual({
      status: 200,
      body: "frontend -> backend says hi",
    });

    // Each app's output is streamed on stdout, prefixed with its name.
    await eventually(
      () =>
        /^frontend +\| frontend handled \/hello$/m.test(out.stdout) &&
        /^backend +\| backend handled \/hello$/m.test(out.stdout),
    );
    expect(out.stdout).toMatch(/^backend +\| \[caravan\] .* starting backend on port \d+$/m);

    // serve uses an in-process control plane: no daemon was started.
    const server = await sb.run(["server", "status", "--json"]);
    expect(json<{ running: boolean }>(server).running).toBe(false);

    expect(appProcesses(sb, "backend")).toHaveLength(1);
    expect(appProcesses(sb, "frontend")).toHaveLength(1);

    child.kill("SIGINT");
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(sb.processes()).toEqual([]);
    expect(await get(`${endpoint}/hello`)).toMatchObject({ status: 0 });

    // Teardown went in reverse dependency order, and the session's state is gone.
    const ev = events(sb);
    expect(timeOf(ev, "frontend", "closed")).toBeLessThan(timeOf(ev, "backend", "closed"));
    const sessions = join(sb.home, "serve");
    expect(existsSync(sessions) ? readdirSync(sessions) : []).toEqual([]);
  });

  it("exits 1 with the failures, rather than serving nothing, when every environment failed", async () => {
    const r = await sb.run(["serve", fixture("failure/boom.ts")], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toContain("STARTUP-BOOM");
    expect(r.stderr).toContain("nothing is serving: all 2 environments failed or were skipped");
    expect(r.stderr).not.toContain("serving; Ctrl-C");
    expect(sb.processes()).toEqual([]);
  });

  it("on SIGINT while still deploying, starts nothing more and leaves no process", async () => {
    const child = sb.start(["serve", fixture("serve/slow-chain.ts")], {
      env: { EVENTS_FILE: eventsFile(sb) },
    });
    const { exited } = capture(child);
    // Interrupt while `first` (slow) is starting; second and third wait for it.
    await eventually(() => events(sb).some((e) => e.app === "first"), 45_000);
    child.kill("SIGINT");
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(sb.processes()).toEqual([]);
    expect(events(sb).map((e) => e.app)).toEqual(["first"]);
  });
});
