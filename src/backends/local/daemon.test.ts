import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { stopDaemon } from "./daemon.ts";
import { homePaths } from "./home.ts";
import { processStartTime } from "./os.ts";

const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const c of cleanups.splice(0)) c();
});

/** A process that stands for a daemon which does not stop: it ignores the signals and the API. */
async function stubbornDaemon(): Promise<{
  paths: ReturnType<typeof homePaths>;
  child: ChildProcess;
}> {
  const home = mkdtempSync(join(tmpdir(), "caravan-daemon-"));
  const child = spawn(
    process.execPath,
    [
      "-e",
      "for (const s of ['SIGTERM','SIGUSR2']) process.on(s, () => {}); setInterval(() => {}, 1000); console.log('up')",
    ],
    { stdio: ["ignore", "pipe", "ignore"] },
  );
  cleanups.push(() => {
    child.kill("SIGKILL");
    rmSync(home, { recursive: true, force: true });
  });
  await new Promise((r) => child.stdout!.once("data", r));
  const paths = homePaths(home);
  writeFileSync(paths.token, "t".repeat(64), { mode: 0o600 });
  writeFileSync(
    paths.daemonFile,
    // An address nobody listens on: the API cannot be asked.
    JSON.stringify({
      pid: child.pid,
      startTime: processStartTime(child.pid!),
      url: "http://127.0.0.1:9",
    }),
  );
  return { paths, child };
}

describe("stopDaemon", () => {
  it("never reports a stop that did not happen: it throws, naming the pid and what to do", async () => {
    const { paths, child } = await stubbornDaemon();
    const err = (await stopDaemon(paths, true, 300).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toContain(`(pid ${child.pid}) is still running`);
    expect(err.message).toContain(`kill ${child.pid}`);
    expect(child.exitCode).toBe(null);
  });

  it("signals the daemon as its owner when the API cannot be used, and reports the stop once it is gone", async () => {
    const home = mkdtempSync(join(tmpdir(), "caravan-daemon-"));
    const child = spawn(
      process.execPath,
      ["-e", "setInterval(() => {}, 1000); console.log('up')"],
      {
        stdio: ["ignore", "pipe", "ignore"],
      },
    );
    cleanups.push(() => {
      child.kill("SIGKILL");
      rmSync(home, { recursive: true, force: true });
    });
    await new Promise((r) => child.stdout!.once("data", r));
    const paths = homePaths(home);
    // No token file at all (it was removed): the API is not even tried.
    writeFileSync(
      paths.daemonFile,
      JSON.stringify({
        pid: child.pid,
        startTime: processStartTime(child.pid!),
        url: "http://127.0.0.1:9",
      }),
    );
    const exited = new Promise((r) => child.once("exit", (_code, signal) => r(signal)));
    expect(await stopDaemon(paths, true, 20_000)).toBe(true);
    expect(await exited).toBe("SIGUSR2");
  });
});
