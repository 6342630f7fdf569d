/**
 * One of the gateway's workers (primary.ts forks them): caravan's gateway library serving
 * every app, accepting on the listening sockets the primary gives it (the other workers accept
 * on the same ones), doing what the primary passes on from the control plane and reporting its
 * share of the traffic. Tokens and login links are checked in the store's database directly.
 *
 * A worker whose primary dies serves on from the state it has, and the orphans see to the
 * primary's succession (succession.ts); each retires once the successor answers. A standby
 * (`STANDBY_ENV`, beside a single worker) is given the state and the sockets like any worker
 * but accepts on none until its primary says `accept` (or dies).
 */
import Database from "better-sqlite3";
import { existsSync, statSync } from "node:fs";
import type { Server } from "node:net";
import { Gateway, type GatewaySpan } from "../../gateway/index.ts";
import { HOME_CHECK_MS, type HomePaths } from "../home.ts";
import { processStartTime } from "../os.ts";
import { TokenStore } from "../tokens.ts";
import { snapshot, type WorkerApp } from "./aggregate.ts";
import type { ListenHandle } from "./listeners.ts";
import {
  MAX_SPANS_PER_REPORT,
  REPORT_EVERY_MS,
  STANDBY_ENV,
  WORKER_ENV,
  helloAt,
  socketPath,
  type FromWorker,
  type RouteState,
  type ToWorker,
} from "./protocol.ts";
import { applyToRoutes, portsInUse, type Routes } from "./routes.ts";
import {
  PRIMARY_SINCE_ENV,
  SUCCESSION_BACKOFF_ENV,
  succeed,
  successionBackoff,
  type SuccessionRun,
} from "./succession.ts";
import { SUCCESSION_PENDING } from "./primary.ts";

/** How long a verified token or session is trusted before the database is asked again. */
const TOKEN_CACHE_MS = 1_000;
/** How often it checks that the database file is still the one it opened. */
const DB_CHECK_MS = 1_000;
/**
 * How long a retiring worker lets its connections finish: an idle keep-alive one closes within
 * 5 s; a longer exchange (a stream, a WebSocket) is cut after this.
 */
const RETIRE_GRACE_MS = 30_000;

/** The store's database, for tokens only (the control plane owns everything else in it). */
function openTokens(file: string): { db: Database.Database; tokens: TokenStore; ino: number } {
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 1000");
  return { db, tokens: new TokenStore(db, { cacheMs: TOKEN_CACHE_MS }), ino: statSync(file).ino };
}

/**
 * Sends to the primary while its channel is open; false when nothing was sent. A send that
 * races the primary's death fails (EPIPE) into a callback, never as the process's 'error'
 * event: uncaught, that ended the worker, and every connection it had, just as it was to
 * serve on without its primary.
 */
export function tellPrimary(
  proc: Pick<NodeJS.Process, "connected" | "send">,
  m: FromWorker,
): boolean {
  if (!proc.connected || !proc.send) return false;
  proc.send(m, undefined, undefined, () => {});
  return true;
}

export function runWorker(paths: HomePaths): void {
  const log = (line: string) =>
    process.stderr.write(`[gateway worker ${process.pid}] ${new Date().toISOString()} ${line}\n`);
  const tell = (m: FromWorker) => tellPrimary(process, m);
  /** The primary that forked it (process.ppid changes once it is orphaned). */
  const primary = process.ppid;
  /** The whole state, as the primary keeps it: for a successor, should the primary die. */
  const routes: Routes = new Map();
  /** The listening sockets it accepts on, by the host:port asked for. */
  const sockets = new Map<string, { host: string; port: number; server: Server }>();
  const listening = new Map<
    number,
    { server: Server; port: number; resolve: (port: number) => void; reject: (e: Error) => void }
  >();
  /** A standby accepts on no socket until `accept`; meanwhile it holds them here. */
  let standby = process.env[STANDBY_ENV] === "1";
  const held = new Map<Server, { port: number; handle: ListenHandle }>();
  let nextListen = 1;
  let leaving = false;
  /**
   * Its first `sync` (the whole state) is done: until then it has nothing, or part, of what the
   * gateway serves, and must not be the one to hand that on to a successor.
   */
  let hasState = false;
  /** Its primary answers on the channel socket (`serving`): a gateway the control plane finds. */
  let primaryServes = false;
  /** Its part in its primary's succession, once orphaned. */
  let succession: SuccessionRun | undefined;
  let store = openTokens(paths.db);
  // A database removed and made again (a lost state.db, a new control plane) is reopened:
  // the old file's tokens are no one's any more.
  setInterval(() => {
    try {
      if (statSync(paths.db).ino === store.ino) return;
      const previous = store;
      store = openTokens(paths.db);
      previous.db.close();
    } catch {
      /* none right now: checked again */
    }
  }, DB_CHECK_MS).unref();

  const wakes = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  let nextWake = 1;
  /** Apps open now (the gateway keeps no list of its own). */
  const apps = new Set<string>();
  let spans: [string, GatewaySpan][] = [];
  let spansDropped = 0;
  /** Requests traced since the last report. */
  let traced = 0;
  // Its share of what one report may carry: what the primary would drop is never serialised.
  const maxSpans = Math.ceil(
    MAX_SPANS_PER_REPORT / Math.max(1, Number(process.env.CARAVAN_GATEWAY_WORKERS) || 1),
  );

  const gateway = new Gateway(
    {
      authorize: (token, app) => store.tokens.verify(token, app),
      redeem: (code, app) => store.tokens.redeem(code, app),
      wake: (app) =>
        new Promise<void>((resolve, reject) => {
          const id = nextWake++;
          // Orphaned: no primary to ask (and so no control plane) until its successor serves.
          if (!tell({ t: "wake", id, app })) return reject(new Error(SUCCESSION_PENDING));
          wakes.set(id, { resolve, reject });
        }),
      recordSpan: (app, span) => {
        if (spans.length >= maxSpans) spansDropped++;
        else spans.push([app, span]);
      },
      // The budget is spent as requests are read: past it, a request costs no span work.
      spanBudget: {
        take: () => {
          if (traced >= maxSpans) {
            spansDropped++;
            return false;
          }
          traced++;
          return true;
        },
        give: (wasTraced) => {
          if (wasTraced) traced = Math.max(0, traced - 1);
          else spansDropped = Math.max(0, spansDropped - 1);
        },
      },
    },
    {
      // On the socket the primary holds for that port: it outlives this worker.
      listen: (server, port, host) =>
        new Promise<number>((resolve, reject) => {
          const id = nextListen++;
          listening.set(id, {
            server,
            port,
            resolve: (actual) => {
              const key = `${host}:${port}`;
              sockets.set(key, { host, port, server });
              server.once(
                "close",
                () => sockets.get(key)?.server === server && sockets.delete(key),
              );
              resolve(actual);
            },
            reject,
          });
          if (!tell({ t: "listen", id, host, port })) {
            listening.delete(id);
            reject(new Error("the gateway's primary is gone"));
          }
        }),
    },
  );
  /** The primary's answer to a `listen`: the socket, which this worker listens on. */
  const listener = (m: Extract<ToWorker, { t: "listener" }>, handle: ListenHandle | undefined) => {
    const asked = listening.get(m.id);
    listening.delete(m.id);
    if (!asked) return handle?.close();
    if (m.error !== undefined || !handle) return asked.reject(new Error(m.error ?? "no socket"));
    // A port asked for as 0 is only known once listened on: that one a standby accepts on.
    if (standby && asked.port !== 0) {
      held.set(asked.server, { port: asked.port, handle });
      return asked.resolve(asked.port);
    }
    asked.server.once("error", asked.reject);
    asked.server.listen(handle, () => {
      asked.server.off("error", asked.reject);
      asked.resolve((asked.server.address() as { port: number }).port);
    });
  };

  /**
   * Closes the held sockets of routes closed or moved since (the gateway's close of a server
   * never listened on leaves the socket, which is not the server's yet, to its holder): kept
   * open, a port would still take connections no one serves, and the primary could not bind
   * it again for the app's next start.
   */
  const releaseHeld = () => {
    if (held.size === 0) return;
    const inUse = portsInUse(routes);
    for (const [server, { port, handle }] of held) {
      const current = [...sockets.values()].some((s) => s.server === server);
      if (current && inUse.has(port)) continue;
      handle.close();
      held.delete(server);
    }
  };

  /** A standby takes over: it accepts on the sockets of the routes it serves now. */
  const accept = (why: string) => {
    if (!standby) return;
    standby = false;
    releaseHeld();
    for (const [server, { port, handle }] of held) {
      server.once("error", (e) => log(`accepting on port ${port}: ${e.message}`));
      server.listen(handle);
    }
    log(`accepting on ${held.size} sockets: ${why}`);
    held.clear();
  };

  /** Another process serves now: stop accepting, let the connections finish, exit. */
  const retire = async (why: string) => {
    if (leaving) return;
    leaving = true;
    log(`retiring: ${why}`);
    setTimeout(() => process.exit(0), RETIRE_GRACE_MS).unref();
    await gateway.stopAccepting();
    store.db.close();
    process.exit(0);
  };

  /** `periodic`: the 200 ms report, which also renews the span budget (a `status` does not). */
  const report = (periodic: boolean) => {
    const out: Record<string, WorkerApp> = {};
    for (const g of gateway.gauges())
      out[g.app] = {
        load: gateway.load(g.app),
        traffic: snapshot(g.traffic),
        inFlight: g.inFlight,
        waiting: g.waiting,
        replicas: g.replicas,
      };
    tell({ t: "report", apps: out, spans, spansDropped });
    spans = [];
    spansDropped = 0;
    if (periodic) traced = 0;
  };

  /** Serves exactly `routes`: others close; replicas no longer listed drain. */
  const sync = async (routes: RouteState[]) => {
    const wanted = new Set(routes.map((r) => r.app));
    await Promise.all([...apps].filter((a) => !wanted.has(a)).map((a) => close(a)));
    const failures: string[] = [];
    await Promise.all(
      routes.map(async (r) => {
        try {
          await gateway.open(r.app, r.ports, r.options);
          apps.add(r.app);
        } catch (e) {
          failures.push(`${r.app}: ${(e as Error).message}`);
          return;
        }
        for (const replica of r.replicas) gateway.addReplica(r.app, replica);
        const listed = new Set(r.replicas.map((x) => x.id));
        for (const x of gateway.load(r.app).replicas)
          if (!listed.has(x.id)) void gateway.drain(r.app, x.id, 5_000);
      }),
    );
    if (failures.length) throw new Error(failures.join("; "));
  };
  const close = (app: string) => {
    apps.delete(app);
    return gateway.close(app);
  };

  const handle = async (m: ToWorker, socket?: ListenHandle): Promise<void> => {
    applyToRoutes(routes, m);
    const done = async (id: number, work: () => Promise<void> | void) => {
      try {
        await work();
        tell({ t: "done", id });
      } catch (e) {
        tell({ t: "done", id, error: (e as Error).message });
      }
    };
    switch (m.t) {
      // Held sockets released before the answer, failed or not: the primary then closes its
      // copies of the ports no route uses.
      case "open":
        return done(m.id, async () => {
          try {
            await gateway.open(m.app, m.ports, m.options);
            apps.add(m.app);
          } finally {
            releaseHeld(); // its ports moved
          }
        });
      case "close":
        return done(m.id, () => close(m.app).finally(releaseHeld));
      case "options":
        return gateway.setOptions(m.app, m.options);
      case "replica":
        return gateway.addReplica(m.app, m.replica);
      case "drain":
        return done(m.id, () => gateway.drain(m.app, m.replica, m.graceMs));
      case "sync":
        await done(m.id, () => sync(m.routes).finally(releaseHeld));
        hasState = true;
        return;
      case "tokens":
        return done(m.id, () => store.tokens.forgetCached());
      case "report":
        return done(m.id, () => report(false));
      case "woken": {
        const wake = wakes.get(m.id);
        wakes.delete(m.id);
        if (m.error === undefined) wake?.resolve();
        else wake?.reject(new Error(m.error));
        return;
      }
      case "listener":
        return listener(m, socket);
      case "retire":
        return retire("its primary handed over to a successor");
      case "serving":
        primaryServes = true;
        return;
      case "accept":
        return accept("the worker it stood by for died");
      case "exit":
        leaving = true;
        await gateway.closeAll();
        tell({ t: "done", id: m.id });
        store.db.close();
        process.exit(0);
    }
  };

  process.on("message", (m: ToWorker, socket?: ListenHandle) => {
    void handle(m, socket).catch((e: Error) => log(`${m.t}: ${e.stack ?? e.message}`));
  });
  // The primary died (it never just lets go of a worker it keeps): serve on, see to its
  // succession, and retire once the successor answers.
  process.on("disconnect", () => {
    if (leaving) return;
    for (const asked of listening.values()) asked.reject(new Error("the gateway's primary died"));
    listening.clear();
    for (const wake of wakes.values()) wake.reject(new Error(SUCCESSION_PENDING));
    wakes.clear();
    // Forked just before (a respawn) and not given the state yet: a successor it spawned
    // would serve nothing and close every app; its siblings, if any, see to the succession.
    if (!hasState) return void retire("its primary died before it was given the state");
    // A successor that died before it answered: its spawner's next attempt succeeds it, not
    // an election of these workers (two successors then, one recorded nowhere).
    if (!primaryServes) return void retire("its primary died before it answered");
    // Orphaned, it serves (and may see to the succession) as any worker does.
    accept("its primary died");
    const backoff = successionBackoff(process.env, Date.now());
    log(
      `its primary died: serving on until a successor answers` +
        (backoff.delayMs ? ` (it died young: electing one in ${backoff.delayMs} ms)` : ""),
    );
    // As its primary did: a removed home (a finished `caravan serve`'s) has nothing to serve.
    setInterval(() => existsSync(paths.home) || process.exit(0), HOME_CHECK_MS).unref();
    succession = succeed({
      home: paths.home,
      socket: socketPath(paths.home),
      predecessor: primary,
      self: { pid: process.pid, startTime: processStartTime(process.pid) ?? "" },
      successor: () => {
        const env = { ...process.env };
        delete env[WORKER_ENV];
        delete env[STANDBY_ENV];
        delete env[PRIMARY_SINCE_ENV];
        if (backoff.next === undefined) delete env[SUCCESSION_BACKOFF_ENV];
        else env[SUCCESSION_BACKOFF_ENV] = backoff.next;
        return {
          command: [process.execPath, ...process.execArgv, process.argv[1] ?? ""],
          env,
          // A listener closing (its app closed as the primary died) is no one's to inherit.
          listeners: [...sockets.values()]
            .filter((s) => s.server.listening)
            .map((s) => ({
              host: s.host,
              port: s.port,
              fd: (s.server as unknown as { _handle: ListenHandle })._handle.fd,
            })),
          routes: [...routes.values()],
        };
      },
      log,
      probe: helloAt,
      delayMs: backoff.delayMs,
    });
    void succession.answered.then((hello) => retire(`its successor (pid ${hello.pid}) answers`));
  });
  setInterval(() => report(true), REPORT_EVERY_MS).unref();
  // SIGTERM is for the primary (it stops the workers); a worker signalled directly obeys it
  // (an orphan: `server stop`, or a control plane that gave up on the succession), and ends a
  // successor it spawned that has not answered yet: none comes up after it, and none holds the
  // ports once this one has exited (the control plane may start a gateway then).
  process.on("SIGTERM", () => {
    void (succession?.end() ?? Promise.resolve()).finally(() => process.exit(0));
  });
  tell({ t: "ready" });
}
