/**
 * Integration-test harness: every test gets its own CARAVAN_HOME (a fully isolated control
 * plane) and runs the real CLI in a child process. `cleanup()` stops the control plane and
 * its apps, then checks that no process of that home is left.
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { afterEach, beforeEach } from "vitest";
import { processesWithHome } from "./processes.ts";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const ROOT = resolve(import.meta.dirname, "..");
export const BIN = join(ROOT, "bin/caravan.js");

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface Sandbox {
  home: string;
  env: NodeJS.ProcessEnv;
  /** Runs `caravan <args>` and waits for it. */
  run(
    args: string[],
    opts?: { cwd?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv },
  ): Promise<CliResult>;
  /** Starts `caravan <args>` without waiting (for serve, logs --follow). */
  start(args: string[], opts?: { cwd?: string; env?: NodeJS.ProcessEnv }): ChildProcess;
  /**
   * Pids of every live process started for this home (the daemon and the apps), not counting
   * the warm pool's idle processes (`cleanup` checks those are gone too).
   */
  processes(): number[];
  cleanup(): Promise<void>;
}

export function sandbox(): Sandbox {
  const home = mkdtempSync(join(tmpdir(), "caravan-test-"));
  const env: NodeJS.ProcessEnv = { ...process.env, CARAVAN_HOME: home, NO_COLOR: "1" };
  delete env.CI; // progress output is plain either way: stderr is not a TTY here
  const started: ChildProcess[] = [];
  const sb: Sandbox = {
    home,
    env,
    run(args, opts = {}) {
      return new Promise((resolvePromise) => {
        execFile(
          process.execPath,
          [BIN, ...args],
          {
            cwd: opts.cwd ?? ROOT,
            env: { ...env, ...opts.env },
            timeout: opts.timeoutMs ?? 90_000,
            maxBuffer: 16 * 1024 * 1024,
          },
          (err, stdout, stderr) => {
            const code = err ? (typeof err.code === "number" ? err.code : 1) : 0;
            // A CLI killed by a signal (or the timeout) says so, rather than failing silently.
            const signal = err?.signal ? `\n[caravan ${args[0]} was killed by ${err.signal}]` : "";
            resolvePromise({ code, stdout, stderr: stderr + signal });
          },
        );
      });
    },
    start(args, opts = {}) {
      const child = spawn(process.execPath, [BIN, ...args], {
        cwd: opts.cwd ?? ROOT,
        env: { ...env, ...opts.env },
        stdio: ["ignore", "pipe", "pipe"],
      });
      started.push(child);
      return child;
    },
    processes() {
      return processesWithHome(home, { idleWarm: false });
    },
    async cleanup() {
      await sb.run(["server", "stop", "--backend", "local"]).catch(() => undefined);
      for (const c of started) if (c.exitCode === null && c.signalCode === null) c.kill("SIGKILL");
      const left = processesWithHome(home);
      for (const pid of left) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          /* gone */
        }
      }
      rmSync(home, { recursive: true, force: true });
      if (left.length) throw new Error(`processes left running for ${home}: ${left.join(", ")}`);
    },
  };
  return sb;
}

/**
 * A fresh sandbox for every test of the calling `describe` (or file), cleaned up after each
 * (`cleanup` fails the test when a process is left). `setup` runs on each new sandbox.
 * The handle stands for the current test's sandbox.
 */
export function useSandbox(setup?: (sb: Sandbox) => void): Sandbox {
  let current: Sandbox | undefined;
  beforeEach(() => {
    current = sandbox();
    setup?.(current);
  });
  afterEach(async () => {
    const done = current;
    current = undefined;
    await done?.cleanup();
  });
  return new Proxy({} as Sandbox, {
    get(_, key) {
      if (!current) throw new Error("the sandbox exists only inside a test");
      return current[key as keyof Sandbox];
    },
  });
}

/** Polls `fn` until it returns a truthy value (no fixed sleeps in tests). */
export async function eventually<T>(
  fn: () => T | Promise<T>,
  timeoutMs = 20_000,
  everyMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`condition not met within ${timeoutMs} ms${last ? `: ${String(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export async function getText(url: string): Promise<{ status: number; body: string }> {
  const res = await fetch(url);
  return { status: res.status, body: await res.text() };
}
