/**
 * One of the gateway's workers (primary.ts forks them): caravan's gateway library serving
 * every app, its listeners shared with the other workers (node:cluster, each worker accepting
 * for itself), doing what the primary passes on from the control plane and reporting its
 * share of the traffic. Tokens and login links are checked in the store's database directly.
 */
import Database from "better-sqlite3";
import { statSync } from "node:fs";
import { Gateway, type GatewaySpan } from "../../gateway/index.ts";
import type { HomePaths } from "../home.ts";
import { TokenStore } from "../tokens.ts";
import { snapshot, type WorkerApp } from "./aggregate.ts";
import {
  MAX_SPANS_PER_REPORT,
  REPORT_EVERY_MS,
  type FromWorker,
  type RouteState,
  type ToWorker,
} from "./protocol.ts";

/** How long a verified token or session is trusted before the database is asked again. */
const TOKEN_CACHE_MS = 1_000;
/** How often it checks that the database file is still the one it opened. */
const DB_CHECK_MS = 1_000;

/** The store's database, for tokens only (the control plane owns everything else in it). */
function openTokens(file: string): { db: Database.Database; tokens: TokenStore; ino: number } {
  const db = new Database(file);
  db.pragma("journal_mode = WAL");
  db.pragma("busy_timeout = 1000");
  return { db, tokens: new TokenStore(db, { cacheMs: TOKEN_CACHE_MS }), ino: statSync(file).ino };
}

export function runWorker(paths: HomePaths): void {
  const tell = (m: FromWorker) => process.connected && process.send!(m);
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
  // Its share of what one report may carry: what the primary would drop is never serialised.
  const maxSpans = Math.ceil(
    MAX_SPANS_PER_REPORT / Math.max(1, Number(process.env.CARAVAN_GATEWAY_WORKERS) || 1),
  );

  const gateway = new Gateway({
    authorize: (token, app) => store.tokens.verify(token, app),
    redeem: (code, app) => store.tokens.redeem(code, app),
    wake: (app) =>
      new Promise<void>((resolve, reject) => {
        const id = nextWake++;
        wakes.set(id, { resolve, reject });
        tell({ t: "wake", id, app });
      }),
    recordSpan: (app, span) => {
      if (spans.length >= maxSpans) spansDropped++;
      else spans.push([app, span]);
    },
  });

  const report = () => {
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

  const handle = async (m: ToWorker): Promise<void> => {
    const done = async (id: number, work: () => Promise<void> | void) => {
      try {
        await work();
        tell({ t: "done", id });
      } catch (e) {
        tell({ t: "done", id, error: (e as Error).message });
      }
    };
    switch (m.t) {
      case "open":
        return done(m.id, async () => {
          await gateway.open(m.app, m.ports, m.options);
          apps.add(m.app);
        });
      case "close":
        return done(m.id, () => close(m.app));
      case "options":
        return gateway.setOptions(m.app, m.options);
      case "replica":
        return gateway.addReplica(m.app, m.replica);
      case "drain":
        return done(m.id, () => gateway.drain(m.app, m.replica, m.graceMs));
      case "sync":
        return done(m.id, () => sync(m.routes));
      case "tokens":
        return done(m.id, () => store.tokens.forgetCached());
      case "report":
        return done(m.id, report);
      case "woken": {
        const wake = wakes.get(m.id);
        wakes.delete(m.id);
        if (m.error === undefined) wake?.resolve();
        else wake?.reject(new Error(m.error));
        return;
      }
      case "exit":
        await gateway.closeAll();
        tell({ t: "done", id: m.id });
        store.db.close();
        process.exit(0);
    }
  };

  process.on("message", (m: ToWorker) => {
    void handle(m).catch((e: Error) =>
      process.stderr.write(`[gateway worker ${process.pid}] ${m.t}: ${e.stack ?? e.message}\n`),
    );
  });
  setInterval(report, REPORT_EVERY_MS).unref();
  // SIGTERM is for the primary (it stops the workers); a worker signalled directly obeys it.
  process.on("SIGTERM", () => process.exit(0));
  tell({ t: "ready" });
}
