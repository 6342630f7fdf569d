import { spawn } from "node:child_process";
import { afterEach, describe, expect, it } from "vitest";
import { readFileSync } from "node:fs";
import { freePort, isAlive, processStartTime, signalGroup } from "./os.ts";

describe("signalGroup", () => {
  const children: ReturnType<typeof spawn>[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) c.kill("SIGKILL");
  });

  const sleeper = (detached: boolean) => {
    const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], {
      detached,
      stdio: "ignore",
    });
    children.push(child);
    return child;
  };

  it("leaves alone a process that reuses the pid of one of ours (its start time differs)", async () => {
    const stranger = sleeper(false);
    await new Promise((r) => setTimeout(r, 50));
    signalGroup(stranger.pid!, "not-its-start-time", "SIGKILL");
    await new Promise((r) => setTimeout(r, 100));
    expect(isAlive(stranger.pid!, processStartTime(stranger.pid!)!)).toBe(true);
  });

  it("signals our process's group when the start time matches", async () => {
    const ours = sleeper(true);
    await new Promise((r) => setTimeout(r, 50));
    const exited = new Promise((r) => ours.once("exit", (_code, signal) => r(signal)));
    signalGroup(ours.pid!, processStartTime(ours.pid!)!, "SIGTERM");
    expect(await exited).toBe("SIGTERM");
  });
});

describe("freePort", () => {
  it("hands out ports below the ephemeral range, which outgoing connections never take", async () => {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
      .trim()
      .split(/\s+/)
      .map(Number);
    const ports = await Promise.all(Array.from({ length: 20 }, () => freePort(new Set())));
    for (const p of ports) expect(p).toBeLessThan(low!);
    const taken = new Set(ports);
    const other = await freePort(taken);
    expect(taken.has(other)).toBe(false);
  });
});
