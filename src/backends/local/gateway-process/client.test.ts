/**
 * The gateway process's life cycle as the control plane drives it, with the real process
 * (compiled into a runtime bundle as the daemon does): a gateway speaking another protocol
 * version is replaced, a second control plane adopts the running one (never two).
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { homePaths, type HomePaths } from "../home.ts";
import { freePort, isAlive, processStartTime } from "../os.ts";
import { Store } from "../store.ts";
import { GatewayProcess } from "./client.ts";
import { GATEWAY_META, PROTOCOL, gatewayLog, socketPath } from "./protocol.ts";

const hooks = { wake: async () => {}, recordSpan: () => {} };
const options = { requiresAuth: false, requestTimeoutMs: 0 };

async function until(check: () => boolean): Promise<void> {
  for (let i = 0; i < 1000 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
  expect(check()).toBe(true);
}

describe("GatewayProcess", () => {
  let home: string;
  let paths: HomePaths;
  let store: Store;
  let upstream: Server;
  const planes: GatewayProcess[] = [];

  beforeEach(async () => {
    home = mkdtempSync(join(tmpdir(), "caravan-gwproc-"));
    paths = homePaths(home);
    store = new Store(paths.db);
    upstream = createServer((_req, res) => res.end("from the app"));
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
  });
  afterEach(async () => {
    await planes.pop()?.stop();
    for (const p of planes.splice(0)) p.detach();
    upstream.close();
    store.close();
    rmSync(home, { recursive: true, force: true });
  });

  const ports = async () => {
    const taken = new Set<number>();
    const pub = await freePort(taken);
    taken.add(pub);
    return { public: pub, internal: await freePort(taken) };
  };
  const replica = () => ({ id: "r1", port: (upstream.address() as { port: number }).port });

  it("replaces a gateway that speaks another protocol version, and serves from the new one", async () => {
    // A stand-in for an older caravan's gateway: it answers on the socket with protocol 0.
    const old = spawn(
      process.execPath,
      [
        "-e",
        `const s = require("node:net").createServer((c) => c.write(JSON.stringify({ t: "hello", protocol: 0, pid: process.pid, startTime: "", build: "" }) + "\\n"));
         s.listen(${JSON.stringify(socketPath(home))});
         process.on("SIGTERM", () => { s.close(); process.exit(0); });`,
      ],
      { stdio: "ignore" },
    );
    await until(() => existsSync(socketPath(home)));
    const oldProc = { pid: old.pid!, startTime: processStartTime(old.pid!)! };
    store.setMeta(GATEWAY_META, JSON.stringify(oldProc));

    const gateway = new GatewayProcess(paths, store, hooks);
    planes.push(gateway);
    const p = await ports();
    await gateway.open("p/d/app", p, options);
    gateway.addReplica("p/d/app", replica());
    expect(isAlive(oldProc.pid, oldProc.startTime)).toBe(false);
    expect(gateway.running?.pid).not.toBe(oldProc.pid);
    const res = await fetch(`http://127.0.0.1:${p.public}/`);
    expect(await res.text()).toBe("from the app");
  });

  it("a second control plane adopts the running gateway instead of starting another", async () => {
    const first = new GatewayProcess(paths, store, hooks);
    planes.push(first);
    const p = await ports();
    await first.open("p/d/app", p, options);
    first.addReplica("p/d/app", replica());
    const pid = first.running!.pid;
    first.detach(); // the first control plane goes; the gateway stays

    const second = new GatewayProcess(paths, store, hooks);
    planes.push(second);
    await second.adopt();
    expect(second.running?.pid).toBe(pid);
    // Still serving what the first one set up, before the second says anything.
    expect(await (await fetch(`http://127.0.0.1:${p.internal}/`)).text()).toBe("from the app");
    // Recovery found nothing to serve: the gateway closes the app's listeners.
    await second.reconcile();
    await expect(fetch(`http://127.0.0.1:${p.internal}/`)).rejects.toThrow();
    expect(second.running?.pid).toBe(pid);
  });

  /**
   * The script of a stand-in gateway on the home's socket, started after `afterMs`: it greets
   * with `protocol` (its own pid and start time), answers every request, and prints the type of
   * each message received. Asked to hand over, it spawns `successor` (a script too), and exits
   * once that answers or has exited.
   */
  const standInScript = (protocol: number, afterMs: number, successor?: string) =>
    `const stat = require("node:fs").readFileSync("/proc/self/stat", "utf8");
     const startTime = stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
     const path = ${JSON.stringify(socketPath(home))};
     setTimeout(() => {
       const server = require("node:net").createServer((c) => {
         c.write(JSON.stringify({ t: "hello", protocol: ${protocol}, pid: process.pid, startTime, build: "", workers: [] }) + "\\n");
         c.on("error", () => {}); // a probe that hangs up at once (a reset) is no reason to die
         let rest = "";
         c.on("data", (d) => {
           const lines = (rest + d).split("\\n");
           rest = lines.pop();
           for (const l of lines) {
             const m = JSON.parse(l);
             process.stdout.write(m.t + "\\n");
             if (m.id !== undefined) c.write(JSON.stringify({ t: "done", id: m.id }) + "\\n");
             if (m.t === "handover" && ${JSON.stringify(successor ?? "")}) {
               server.close();
               const next = require("node:child_process").spawn(process.execPath, ["-e", ${JSON.stringify(successor ?? "")}], { detached: true, stdio: "ignore" });
               process.stdout.write("successor " + next.pid + "\\n");
               // As a gateway does: it exits once its successor answers, or has exited.
               let gone = false;
               next.once("exit", () => (gone = true));
               const exitOnce = () => require("node:net").createConnection(path)
                 .once("connect", () => process.exit(0))
                 .once("error", () => (gone ? process.exit(0) : setTimeout(exitOnce, 20)));
               exitOnce();
             }
           }
         });
       });
       server.listen(path, () => process.stdout.write("listening\\n"));
     }, ${afterMs});`;

  /** A stand-in gateway (`standInScript`), and what it printed. */
  const standInGateway = ({
    afterMs = 0,
    protocol = PROTOCOL,
    successor,
  }: { afterMs?: number; protocol?: number; successor?: string } = {}) => {
    const child = spawn(process.execPath, ["-e", standInScript(protocol, afterMs, successor)], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    const lines: string[] = [];
    let rest = "";
    child.stdout!.on("data", (d: Buffer) => {
      const all = (rest + d.toString()).split("\n");
      rest = all.pop()!;
      lines.push(...all);
    });
    return {
      child,
      /** The messages received so far, by type. */
      received: () => lines.filter((l) => l !== "listening" && !l.startsWith("successor ")),
      listening: () => lines.includes("listening"),
      /** The pid of the successor it spawned when asked to hand over. */
      successor: () =>
        Number(lines.find((l) => l.startsWith("successor "))?.slice(10)) || undefined,
    };
  };

  it("asks a successor of another protocol, brought up by an older gateway's orphans, to hand over", async () => {
    const orphan = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], {
      stdio: "ignore",
    });
    const older = standInGateway({
      afterMs: 300,
      protocol: PROTOCOL + 1,
      successor: standInScript(PROTOCOL, 0),
    });
    try {
      const primary = await deadProcess();
      const worker = { pid: orphan.pid!, startTime: processStartTime(orphan.pid!)! };
      store.setMeta(GATEWAY_META, JSON.stringify({ ...primary, workers: [worker] }));
      const gateway = new GatewayProcess(paths, store, hooks);
      planes.push(gateway);
      await gateway.adopt();
      await until(() => older.received().includes("handover"));
      expect(older.received()).toEqual(["handover"]);
      expect(gateway.running?.pid).toBe(older.successor());
      expect(existsSync(gatewayLog(home))).toBe(false); // no gateway was spawned
    } finally {
      orphan.kill("SIGKILL");
      older.child.kill("SIGKILL");
      const next = older.successor();
      if (next) process.kill(next, "SIGKILL");
    }
  }, 30_000);

  it("adopts a gateway that answers on the socket though none recorded lives (brought up by orphans while no control plane ran), and keeps what it serves until recovery is done", async () => {
    const primary = await deadProcess();
    const worker = await deadProcess();
    store.setMeta(GATEWAY_META, JSON.stringify({ ...primary, workers: [worker] }));
    const successor = standInGateway();
    try {
      await until(successor.listening);
      const gateway = new GatewayProcess(paths, store, hooks);
      await gateway.adopt();
      expect(gateway.running?.pid).toBe(successor.child.pid);
      await gateway.open("p/d/first", await ports(), options);
      // Not taken for a gateway it started: no `sync` listing only the first app re-opened.
      // (The stand-in prints what it received: its line may come after its answer.)
      await until(() => successor.received().includes("open"));
      expect(successor.received()).toEqual(["hello", "open"]);
      expect(existsSync(gatewayLog(home))).toBe(false); // no gateway was spawned
      await gateway.reconcile();
      await until(() => successor.received().includes("sync"));
      expect(successor.received()).toEqual(["hello", "open", "sync"]);
      gateway.detach();
    } finally {
      successor.child.kill("SIGKILL");
    }
  });

  it("does not wait for the succession once `server stop` comes: the orphans are ended, with their successor, and no gateway is spawned", async () => {
    // An orphan, as one is: it spawned a successor (here one that never answers), and ends
    // it when it is stopped, exiting once that is gone.
    const orphan = spawn(
      process.execPath,
      [
        "-e",
        `const next = require("node:child_process").spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], { stdio: "ignore" });
         console.log(next.pid);
         process.on("SIGTERM", () => { next.once("exit", () => process.exit(0)); next.kill(); });
         setInterval(() => {}, 1000);`,
      ],
      { stdio: ["ignore", "pipe", "ignore"] },
    );
    const successor = Number(
      await new Promise<string>((r) => orphan.stdout!.once("data", (d) => r(String(d)))),
    );
    const startTime = processStartTime(successor)!;
    try {
      const primary = await deadProcess();
      const worker = { pid: orphan.pid!, startTime: processStartTime(orphan.pid!)! };
      store.setMeta(GATEWAY_META, JSON.stringify({ ...primary, workers: [worker] }));
      const gateway = new GatewayProcess(paths, store, hooks);
      const adopting = gateway.adopt().catch((e: Error) => e.message);
      await gateway.stop();
      expect(await adopting).toBe("the control plane is stopping");
      expect(isAlive(successor, startTime)).toBe(false);
      expect(existsSync(gatewayLog(home))).toBe(false); // no gateway was spawned
    } finally {
      orphan.kill("SIGKILL");
      if (isAlive(successor, startTime)) process.kill(successor, "SIGKILL");
    }
  }, 30_000);

  it("waits for the orphans' successor after killing a wedged primary, instead of starting a second gateway", async () => {
    // A wedged primary: it does not answer on the socket and ignores SIGTERM (so is killed).
    const wedged = spawn(
      process.execPath,
      ["-e", `process.on("SIGTERM", () => {}); setInterval(() => {}, 1000); console.log("up");`],
      { stdio: ["ignore", "pipe", "ignore"] },
    );
    const orphan = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], {
      stdio: "ignore",
    });
    // Its workers, orphaned by the kill, bring up a successor.
    let successor: ReturnType<typeof standInGateway> | undefined;
    wedged.once("exit", () => (successor = standInGateway()));
    try {
      await new Promise((r) => wedged.stdout!.once("data", r));
      const worker = { pid: orphan.pid!, startTime: processStartTime(orphan.pid!)! };
      const primary = { pid: wedged.pid!, startTime: processStartTime(wedged.pid!)! };
      store.setMeta(GATEWAY_META, JSON.stringify({ ...primary, workers: [worker] }));
      const lines: string[] = [];
      const gateway = new GatewayProcess(paths, store, { ...hooks, log: (l) => lines.push(l) });
      planes.push(gateway);
      await gateway.adopt();
      expect(lines).toContain(
        `gateway pid ${primary.pid} does not answer on its socket: replacing it`,
      );
      expect(lines).toContain(`gateway pid ${successor?.child.pid} succeeded pid ${primary.pid}`);
      expect(existsSync(gatewayLog(home))).toBe(false); // no gateway was spawned
    } finally {
      wedged.kill("SIGKILL");
      orphan.kill("SIGKILL");
      successor?.child.kill("SIGKILL");
    }
  }, 30_000);

  /** A process that exited: its pid and the start time it had. */
  const deadProcess = async () => {
    const p = spawn(process.execPath, ["-e", "setTimeout(() => {}, 10_000)"], { stdio: "ignore" });
    const proc = { pid: p.pid!, startTime: processStartTime(p.pid!)! };
    p.kill("SIGKILL");
    await until(() => !isAlive(proc.pid, proc.startTime));
    return proc;
  };

  it("waits for the successor of a dead primary while its workers live, and adopts it (spawns none)", async () => {
    const orphan = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000)"], {
      stdio: "ignore",
    });
    // The successor the orphans bring up: it answers a little later, and every request.
    const successor = spawn(
      process.execPath,
      [
        "-e",
        `setTimeout(() => require("node:net").createServer((c) => {
           c.write(JSON.stringify({ t: "hello", protocol: ${PROTOCOL}, pid: process.pid, startTime: "s", build: "", workers: [] }) + "\\n");
           let rest = "";
           c.on("data", (d) => {
             const lines = (rest + d).split("\\n");
             rest = lines.pop();
             for (const l of lines) { const m = JSON.parse(l); if (m.id !== undefined) c.write(JSON.stringify({ t: "done", id: m.id }) + "\\n"); }
           });
         }).listen(${JSON.stringify(socketPath(home))}), 300);`,
      ],
      { stdio: "ignore" },
    );
    try {
      const primary = await deadProcess();
      const worker = { pid: orphan.pid!, startTime: processStartTime(orphan.pid!)! };
      store.setMeta(GATEWAY_META, JSON.stringify({ ...primary, workers: [worker] }));
      const lines: string[] = [];
      const gateway = new GatewayProcess(paths, store, { ...hooks, log: (l) => lines.push(l) });
      await gateway.adopt();
      await gateway.open("p/d/app", await ports(), options);
      expect(lines).toContain(`gateway pid ${successor.pid} succeeded pid ${primary.pid}`);
      expect(JSON.parse(store.getMeta(GATEWAY_META)!)).toMatchObject({
        pid: successor.pid,
        startTime: "s",
      });
      expect(existsSync(gatewayLog(home))).toBe(false); // no gateway was spawned
      expect(isAlive(worker.pid, worker.startTime)).toBe(true); // nor the orphan ended
      gateway.detach();
    } finally {
      orphan.kill("SIGKILL");
      successor.kill("SIGKILL");
    }
  });

  it("starts a gateway at once when the dead primary's workers are gone too", async () => {
    const primary = await deadProcess();
    const worker = await deadProcess();
    store.setMeta(GATEWAY_META, JSON.stringify({ ...primary, workers: [worker] }));
    const lines: string[] = [];
    const gateway = new GatewayProcess(paths, store, { ...hooks, log: (l) => lines.push(l) });
    planes.push(gateway);
    const p = await ports();
    await gateway.open("p/d/app", p, options);
    gateway.addReplica("p/d/app", replica());
    expect(lines.filter((l) => l.includes("waiting for their successor"))).toEqual([]);
    expect(gateway.running?.pid).not.toBe(primary.pid);
    expect(await (await fetch(`http://127.0.0.1:${p.internal}/`)).text()).toBe("from the app");
  });

  it("with a single worker and its standby, an app closed and opened again gets its own ports back (the standby holds no socket of a closed app)", async () => {
    const before = process.env.CARAVAN_GATEWAY_WORKERS;
    process.env.CARAVAN_GATEWAY_WORKERS = "1";
    try {
      const gateway = new GatewayProcess(paths, store, hooks);
      planes.push(gateway);
      const p = await ports();
      await gateway.open("p/d/app", p, options);
      gateway.addReplica("p/d/app", replica());
      await until(() => /standby \d+ synced/.test(readFileSync(gatewayLog(home), "utf8")));
      await gateway.close("p/d/app");
      // Closed: refused (a socket still held would take the connection and leave it hanging).
      await expect(
        new Promise((resolve, reject) =>
          connect(p.internal, "127.0.0.1").on("connect", resolve).on("error", reject),
        ),
      ).rejects.toThrow(/ECONNREFUSED/);
      await gateway.open("p/d/app", p, options);
      gateway.addReplica("p/d/app", replica());
      expect(await (await fetch(`http://127.0.0.1:${p.internal}/`)).text()).toBe("from the app");
    } finally {
      if (before === undefined) delete process.env.CARAVAN_GATEWAY_WORKERS;
      else process.env.CARAVAN_GATEWAY_WORKERS = before;
    }
  });

  it("starts no gateway for a home removed meanwhile, and does not make it again", async () => {
    const gateway = new GatewayProcess(paths, store, hooks);
    planes.push(gateway);
    rmSync(home, { recursive: true, force: true });
    await expect(gateway.open("p/d/app", await ports(), options)).rejects.toThrow(
      `${paths.db} is gone (its home removed): no gateway is started for it`,
    );
    expect(gateway.running).toBeUndefined();
    expect(existsSync(home)).toBe(false);
  });

  it("drops the channel to a gateway that does not answer a request (stuck), instead of waiting for ever", async () => {
    // A stand-in gateway that greets with the current protocol, then never answers.
    const stuck = spawn(
      process.execPath,
      [
        "-e",
        `require("node:net").createServer((c) => c.write(JSON.stringify({ t: "hello", protocol: ${PROTOCOL}, pid: process.pid, startTime: "", build: "" }) + "\\n")).listen(${JSON.stringify(socketPath(home))}, () => console.log("listening"));`,
      ],
      { stdio: ["ignore", "pipe", "ignore"] },
    );
    let listening = false;
    stuck.stdout!.on("data", () => (listening = true));
    try {
      await until(() => listening);
      store.setMeta(
        GATEWAY_META,
        JSON.stringify({ pid: stuck.pid!, startTime: processStartTime(stuck.pid!)! }),
      );
      const lines: string[] = [];
      const gateway = new GatewayProcess(paths, store, { ...hooks, log: (l) => lines.push(l) });
      await gateway.adopt();
      expect(gateway.running?.pid).toBe(stuck.pid);
      await gateway.refresh(); // without a bound on requests: never settles
      expect(lines).toContain("the gateway did not answer a report within 10000 ms");
      gateway.detach();
    } finally {
      stuck.kill("SIGKILL");
    }
  }, 25_000);
});
