import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isAlive, processStartTime } from "../os.ts";
import type { Hello, Proc } from "./protocol.ts";
import {
  awaitSuccessor,
  candidateFile,
  clearElections,
  elect,
  handoverPending,
  stale,
  PRIMARY_SINCE_ENV,
  SUCCESSION_BACKOFF_ENV,
  spawnSuccessor,
  succeed,
  successionBackoff,
  successionPending,
  type SuccessionRun,
} from "./succession.ts";

const me: Proc = { pid: process.pid, startTime: processStartTime(process.pid)! };
/** A process that has exited (its pid and the start time it had). */
function deadProcess(): Proc {
  const r = spawnSync(process.execPath, [
    "-e",
    "process.stdout.write(require('fs').readFileSync(`/proc/${process.pid}/stat`,'utf8'))",
  ]);
  const stat = r.stdout.toString();
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { pid: r.pid!, startTime: rest[19]! };
}
const hello = (pid: number): Hello => ({
  t: "hello",
  protocol: 2,
  pid,
  startTime: "1",
  build: "",
  workers: [],
});

describe("the election of the orphan that spawns the successor", () => {
  let home: string;
  beforeEach(() => (home = mkdtempSync(join(tmpdir(), "caravan-elect-"))));
  afterEach(() => rmSync(home, { recursive: true, force: true }));

  it("elects exactly one, and tells the others who", () => {
    const other: Proc = { pid: me.pid + 1, startTime: "x" };
    expect(elect(home, 100, 0, me)).toEqual({ elected: true });
    expect(elect(home, 100, 0, other)).toEqual({ elected: false, holder: me });
    // Asked again (it polls), the elected one is still it.
    expect(elect(home, 100, 0, me)).toEqual({ elected: false, holder: me });
    // Another primary's succession, or the next attempt, is a new election.
    expect(elect(home, 101, 0, other)).toEqual({ elected: true });
    expect(elect(home, 100, 1, other)).toEqual({ elected: true });
  });

  it("sees a holder that died, or whose pid was reused, as stale", () => {
    expect(stale(me)).toBe(false);
    expect(stale(deadProcess())).toBe(true);
    expect(stale({ pid: me.pid, startTime: String(Number(me.startTime) + 1) })).toBe(true);
  });

  it("leaves no file but the election's; the successor clears those, never a vote being cast", () => {
    elect(home, 100, 0, me);
    elect(home, 100, 0, { pid: 1, startTime: "x" });
    expect(readdirSync(home)).toEqual(["gateway.successor-100-0"]);
    // Another orphan's vote, written but not linked yet (a successor that clears it then
    // made that orphan's link fail, and it crashed, with its connections).
    writeFileSync(candidateFile(home, 5), "{}");
    clearElections(home);
    expect(readdirSync(home).map((f) => join(home, f))).toEqual([candidateFile(home, 5)]);
  });
});

describe("waiting for a successor", () => {
  it("returns the successor's hello once it answers, not the predecessor's", async () => {
    const answers = [undefined, hello(7), undefined, hello(8)];
    let probes = 0;
    const found = await awaitSuccessor(
      async () => answers[probes++],
      7,
      () => true,
    );
    expect(found?.pid).toBe(8);
    expect(probes).toBe(4);
  });

  it("stops waiting as soon as it should not (no orphan alive): the control plane spawns", async () => {
    let probes = 0;
    const found = await awaitSuccessor(
      async () => (probes++, undefined),
      7,
      successionPending([deadProcess()], Date.now() + 60_000),
    );
    expect(found).toBeUndefined();
    expect(probes).toBe(1);
  });

  it("waits while an orphan is alive, and not past the deadline", () => {
    const alive = successionPending([deadProcess(), me], Date.now() + 60_000);
    expect(alive()).toBe(true);
    expect(successionPending([me], Date.now() - 1)()).toBe(false);
    // A reused pid is no orphan.
    expect(successionPending([{ pid: me.pid, startTime: "0" }], Date.now() + 60_000)()).toBe(false);
  });
});

describe("the control plane's wait for a handover", () => {
  it("waits while the gateway handing over lives, and not past the deadline", () => {
    expect(handoverPending(me, Date.now() + 60_000)()).toBe(true);
    expect(handoverPending(me, Date.now() - 1)()).toBe(false);
  });

  it("stops waiting once it is gone (its successor failed to start), after a grace for one that answered as it exited", async () => {
    const waiting = handoverPending(deadProcess(), Date.now() + 60_000, undefined, 0);
    expect(waiting()).toBe(true);
    await new Promise((r) => setTimeout(r, 5));
    expect(waiting()).toBe(false);
  });
});

describe("an orphan's part in the succession", () => {
  let home: string;
  let run: SuccessionRun | undefined;
  beforeEach(() => (home = mkdtempSync(join(tmpdir(), "caravan-succeed-"))));
  afterEach(async () => {
    await run?.end();
    rmSync(home, { recursive: true, force: true });
  });

  /** The only orphan, whose successor runs `script` and never answers (no gateway answers). */
  const orphan = (script: string, lines: string[], delayMs?: number) =>
    succeed({
      delayMs,
      home,
      socket: join(home, "gateway.sock"),
      predecessor: 1,
      self: me,
      successor: () => ({
        command: [process.execPath, "-e", script],
        env: process.env,
        listeners: [],
        routes: [],
      }),
      log: (l) => lines.push(l),
      probe: async () => undefined,
    });
  const until = async (check: () => boolean) => {
    for (let i = 0; i < 500 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
    expect(check()).toBe(true);
  };
  const spawnedPids = (lines: string[]) =>
    lines.flatMap((l) => /spawned its successor, pid (\d+)/.exec(l)?.[1] ?? []).map(Number);

  it("spawns another successor when the one it spawned dies before answering, up to 3", async () => {
    const lines: string[] = [];
    run = orphan("process.exit(1)", lines);
    await until(() => lines.some((l) => l.includes("(attempt 2)")));
    // Then it waits for a control plane: no fourth.
    await new Promise((r) => setTimeout(r, 300));
    expect(spawnedPids(lines)).toHaveLength(3);
  });

  it("does not elect before its wait (a primary that died young): no successor meanwhile", async () => {
    const lines: string[] = [];
    run = orphan("setInterval(() => {}, 1000)", lines, 60_000);
    await new Promise((r) => setTimeout(r, 300));
    expect(spawnedPids(lines)).toEqual([]);
    expect(readdirSync(home)).toEqual([]); // no vote cast
  });

  it("leaks no file descriptor (the log's) when the successor cannot be spawned", () => {
    const open = () => readdirSync("/proc/self/fd").length;
    const before = open();
    expect(() => spawnSuccessor(["no\0such"], {}, home, [], [])).toThrow();
    expect(open()).toBe(before);
  });

  it("ends a successor it spawned that has not answered when it is ended itself, and waits until it is gone", async () => {
    const lines: string[] = [];
    run = orphan("setInterval(() => {}, 1000)", lines);
    await until(() => spawnedPids(lines).length === 1);
    const pid = spawnedPids(lines)[0]!;
    const successor = { pid, startTime: processStartTime(pid)! };
    expect(isAlive(successor.pid, successor.startTime)).toBe(true);
    // Gone once end() is done: the worker exits only then (its successor held the ports).
    await run.end();
    expect(isAlive(successor.pid, successor.startTime)).toBe(false);
    expect(spawnedPids(lines)).toHaveLength(1);
  });

  it("ends the successor it spawned when another gateway answers (another election's), and keeps one that is the gateway answering", async () => {
    for (const answering of ["other", "own"] as const) {
      const lines: string[] = [];
      let answers: number | undefined;
      run = succeed({
        home,
        socket: join(home, "gateway.sock"),
        predecessor: 1,
        self: me,
        successor: () => ({
          command: [process.execPath, "-e", "setInterval(() => {}, 1000)"],
          env: process.env,
          listeners: [],
          routes: [],
        }),
        log: (l) => lines.push(l),
        probe: async () => (answers === undefined ? undefined : hello(answers)),
      });
      await until(() => spawnedPids(lines).length === 1);
      const pid = spawnedPids(lines)[0]!;
      const child = { pid, startTime: processStartTime(pid)! };
      try {
        answers = answering === "own" ? pid : deadProcess().pid;
        await run.answered;
        if (answering === "other") await until(() => !isAlive(child.pid, child.startTime));
        else expect(isAlive(child.pid, child.startTime)).toBe(true);
      } finally {
        if (isAlive(child.pid, child.startTime)) process.kill(pid, "SIGKILL");
      }
      await until(() => !isAlive(child.pid, child.startTime));
      rmSync(join(home, "gateway.successor-1-0"), { force: true });
    }
  });
});

describe("the succession's crash backoff", () => {
  const now = 1_000_000;
  it("waits and hands on a doubled wait when the primary died young, up to 30 s", () => {
    const young = { [PRIMARY_SINCE_ENV]: String(now - 1_000) };
    expect(successionBackoff(young, now)).toEqual({ delayMs: 250, next: "500" });
    expect(successionBackoff({ ...young, [SUCCESSION_BACKOFF_ENV]: "500" }, now)).toEqual({
      delayMs: 500,
      next: "1000",
    });
    expect(successionBackoff({ ...young, [SUCCESSION_BACKOFF_ENV]: "30000" }, now)).toEqual({
      delayMs: 30_000,
      next: "30000",
    });
  });

  it("does not wait, and starts the count again, after a primary that was up 30 s (or of unknown age)", () => {
    const stable = { [PRIMARY_SINCE_ENV]: String(now - 30_000), [SUCCESSION_BACKOFF_ENV]: "8000" };
    expect(successionBackoff(stable, now)).toEqual({ delayMs: 0, next: undefined });
    expect(successionBackoff({}, now)).toEqual({ delayMs: 0, next: undefined });
  });
});
