/**
 * `caravan dev`: deploys, then redeploys on a save — only the app whose module changed gets a
 * new revision, with no failed request while it is replaced; a save that breaks the file
 * prints the error and leaves everything serving; Ctrl-C stops everything and exits 0.
 */
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { cpSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ROOT, eventually, useSandbox } from "./helpers.ts";
import { fixture, get, status } from "./support.ts";

function capture(child: ChildProcess) {
  const out = { stdout: "", stderr: "" };
  child.stdout!.on("data", (d: Buffer) => (out.stdout += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (out.stderr += d.toString()));
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return { out, exited };
}

/** Requests both apps in a loop until stopped; counts what did not answer 200. */
function requestLoop(urls: string[]) {
  let running = true;
  const counts = { ok: 0, failed: 0, bodies: new Set<string>(), errors: [] as string[] };
  const loops = urls.map(async (url) => {
    while (running) {
      const r = await get(url);
      if (r.status === 200) {
        counts.ok++;
        counts.bodies.add(r.body);
      } else {
        counts.failed++;
        counts.errors.push(`${url}: ${r.status} ${r.body}`);
      }
    }
  });
  return {
    counts,
    stop: async () => {
      running = false;
      await Promise.all(loops);
      return counts;
    },
  };
}

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe("caravan dev", () => {
  const sb = useSandbox();

  it("redeploys only the edited app without a failed request, survives a broken save, and stops on SIGINT", async () => {
    // A copy inside the repository (its packages resolve from here), edited by the test.
    const dir = join(ROOT, "test/fixtures", `.tmp-dev-${randomBytes(4).toString("hex")}`);
    dirs.push(dir);
    cpSync(fixture("dev"), dir, { recursive: true });
    const child = sb.start(["dev", join(dir, "main.ts")]);
    const { out, exited } = capture(child);

    // dev starts the daemon (and so stops it at the end) before it deploys: only then does the
    // test ask for status, which would start one itself.
    await eventually(() => /deploying .*main\.ts/.test(out.stderr), 30_000);
    const envs = await eventually(async () => {
      const s = await status(sb).catch(() => undefined);
      return s?.greeter?.state === "ready" && s.caller?.state === "ready" ? s : undefined;
    }, 60_000);
    const greeterUrl = envs.greeter!.endpoint!;
    const callerUrl = envs.caller!.endpoint!;
    expect(await eventually(() => get(callerUrl).then((r) => r.status === 200 && r))).toEqual({
      status: 200,
      body: "caller v1 -> greeter v1",
    });
    expect((await get(greeterUrl)).body).toBe("greeter v1");
    await eventually(() => /watching \d+ file/.test(out.stderr), 30_000);
    // Each app's log is streamed, prefixed with its name.
    await eventually(() => /^caller +\| .*starting caller/m.test(out.stdout));

    const loop = requestLoop([greeterUrl, callerUrl]);
    await eventually(() => loop.counts.ok >= 20);
    const callerFile = join(dir, "caller.ts");
    writeFileSync(callerFile, readFileSync(callerFile, "utf8").replace("caller v1", "caller v2"));
    await eventually(
      () => get(callerUrl).then((r) => r.body === "caller v2 -> greeter v1"),
      60_000,
    ).catch(async (e: Error) => {
      throw new Error(
        `${e.message}\ncaller answers ${JSON.stringify(await get(callerUrl))}\n--- dev's stderr ---\n${out.stderr}`,
      );
    });
    const seenAfter = loop.counts.ok;
    await eventually(() => loop.counts.ok >= seenAfter + 20);
    const counts = await loop.stop();
    expect(counts.errors).toEqual([]);
    expect(counts.failed).toBe(0);
    expect(counts.bodies).toContain("caller v1 -> greeter v1");
    expect(counts.bodies).toContain("caller v2 -> greeter v1");

    const after = await status(sb);
    expect(after.greeter!.revision).toBe(envs.greeter!.revision);
    expect(after.caller!.revision).not.toBe(envs.caller!.revision);
    expect(out.stderr).toMatch(/caller\.ts changed/);
    expect(out.stderr).toMatch(/^= greeter +unchanged/m);

    // A save that breaks the file: the error is printed, both apps keep serving.
    const mainFile = join(dir, "main.ts");
    const mark = out.stderr.length;
    writeFileSync(mainFile, readFileSync(mainFile, "utf8") + "\nconst = ;\n");
    await eventually(() => /error \[LOAD_FAILED\].*main\.ts/.test(out.stderr.slice(mark)), 60_000);
    await eventually(() => /nothing was deployed/.test(out.stderr.slice(mark)));
    expect(await get(callerUrl)).toEqual({ status: 200, body: "caller v2 -> greeter v1" });
    expect(await get(greeterUrl)).toEqual({ status: 200, body: "greeter v1" });
    const broken = await status(sb);
    expect(broken.greeter!.revision).toBe(after.greeter!.revision);
    expect(broken.caller!.revision).toBe(after.caller!.revision);

    // Ctrl-C: everything stops (dependents first), dev exits 0, nothing is left running.
    child.kill("SIGINT");
    expect(await exited).toEqual({ code: 0, signal: null });
    expect(out.stderr).toMatch(/stopped caller\nstopped greeter/);
    expect(sb.processes()).toEqual([]);
    expect(await get(callerUrl)).toMatchObject({ status: 0 });
  }, 240_000);

  it("refuses a file that does not exist", async () => {
    const r = await sb.run(["dev", "no-such-file.ts"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("no-such-file.ts: no such file");
  });
});
