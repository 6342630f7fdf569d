/**
 * The local gateway as its own process (one per `$CARAVAN_HOME`), so that apps' endpoints
 * keep answering while the control plane is stopped, crashed, restarted or upgraded. The
 * control plane spawns it detached and adopts it like an app (client.ts); it runs caravan's
 * gateway library (`../../gateway/`) with what the control plane last told it over the
 * channel (protocol.ts), and serves on from that when no control plane is connected.
 *
 * Tokens and session cookies are checked against the store's database itself (a verified
 * value is trusted for at most 1 s, so a revocation made by any process takes effect within
 * that), and a login link is redeemed by a write to the same database: both work without a
 * control plane. Waking a scaled-to-zero app needs one: without it the request gets 503.
 *
 * Started as `node main.js` with `CARAVAN_HOME` set; compiled into caravan's runtime bundle.
 */
import Database from "better-sqlite3";
import { existsSync, rmSync } from "node:fs";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { dirname } from "node:path";
import { Gateway, type GatewaySpan } from "../../gateway/index.ts";
import { homePaths } from "../home.ts";
import { processStartTime } from "../os.ts";
import { TokenStore } from "../tokens.ts";
import {
  MAX_SPANS_PER_REPORT,
  PROTOCOL,
  REPORT_EVERY_MS,
  readMessages,
  send,
  socketPath,
  type AppReport,
  type ToGateway,
} from "./protocol.ts";

/** How long a verified token or session is trusted before the database is asked again. */
const TOKEN_CACHE_MS = 1_000;
/** How often it checks that its home still exists (a removed one ends it). */
const HOME_CHECK_MS = 5_000;

/** Why a request for an app with no replica gets 503 while no control plane is connected. */
const NO_CONTROL_PLANE =
  "the control plane is not running, and only it starts apps: any caravan command (e.g. caravan server start) starts it";

const paths = homePaths(process.env.CARAVAN_HOME);
const log = (line: string) =>
  process.stderr.write(`[gateway ${process.pid}] ${new Date().toISOString()} ${line}\n`);

// The store's database, for tokens only; the control plane owns everything else in it.
const db = new Database(paths.db);
db.pragma("journal_mode = WAL");
db.pragma("busy_timeout = 1000");
const tokens = new TokenStore(db, { cacheMs: TOKEN_CACHE_MS });

/** The connected control plane (the newest to say hello), if any. */
let controlPlane: Socket | undefined;
const wakes = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
let nextWake = 1;
/** Apps open now (the gateway keeps no list of its own). */
const apps = new Set<string>();
let spans: [string, GatewaySpan][] = [];
let spansDropped = 0;

const gateway = new Gateway({
  authorize: (token, app) => tokens.verify(token, app),
  redeem: (code, app) => tokens.redeem(code, app),
  wake: (app) =>
    new Promise<void>((resolve, reject) => {
      if (!controlPlane) return reject(new Error(NO_CONTROL_PLANE));
      const id = nextWake++;
      wakes.set(id, { resolve, reject });
      send(controlPlane, { t: "wake", id, app });
    }),
  recordSpan: (app, span) => {
    if (!controlPlane) return; // nobody to store it: not kept
    if (spans.length >= MAX_SPANS_PER_REPORT) spansDropped++;
    else spans.push([app, span]);
  },
});

async function handle(socket: Socket, m: ToGateway): Promise<void> {
  const done = async (id: number, work: () => Promise<void> | void) => {
    try {
      await work();
      send(socket, { t: "done", id });
    } catch (e) {
      send(socket, { t: "done", id, error: (e as Error).message });
    }
  };
  switch (m.t) {
    case "open":
      return done(m.id, async () => {
        await gateway.open(m.app, m.ports, m.options);
        apps.add(m.app);
      });
    case "close":
      apps.delete(m.app);
      return done(m.id, () => gateway.close(m.app));
    case "options":
      return gateway.setOptions(m.app, m.options);
    case "replica":
      return gateway.addReplica(m.app, m.replica);
    case "drain":
      return done(m.id, () => gateway.drain(m.app, m.replica, m.graceMs));
    case "sync":
      return done(m.id, () => sync(m.routes));
    case "woken": {
      const wake = wakes.get(m.id);
      wakes.delete(m.id);
      if (m.error === undefined) wake?.resolve();
      else wake?.reject(new Error(m.error));
      return;
    }
    case "tokens":
      return done(m.id, () => tokens.forgetCached());
    case "report":
      return done(m.id, () => report());
    case "exit":
      await gateway.closeAll();
      send(socket, { t: "done", id: m.id });
      return exit("told to by the control plane");
  }
}

/** Serves exactly `routes`: others close; replicas no longer listed drain (their processes are gone or going). */
async function sync(routes: Extract<ToGateway, { t: "sync" }>["routes"]): Promise<void> {
  const wanted = new Set(routes.map((r) => r.app));
  await Promise.all([...apps].filter((a) => !wanted.has(a)).map((a) => closeApp(a)));
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
}

function closeApp(app: string): Promise<void> {
  apps.delete(app);
  return gateway.close(app);
}

function report(): void {
  if (!controlPlane) return;
  const out: Record<string, AppReport> = {};
  for (const app of apps) out[app] = { load: gateway.load(app), stats: gateway.stats(app) };
  send(controlPlane, {
    t: "report",
    apps: out,
    metrics: gateway.metrics(),
    spans,
    spansDropped,
  });
  spans = [];
  spansDropped = 0;
}

function connected(socket: Socket): void {
  send(socket, {
    t: "hello",
    protocol: PROTOCOL,
    pid: process.pid,
    startTime: processStartTime(process.pid) ?? "",
    build: dirname(process.argv[1] ?? ""),
  });
  let greeted = false;
  readMessages<ToGateway>(socket, (m) => {
    if (!greeted) {
      if (m.t !== "hello" || m.protocol !== PROTOCOL) return socket.destroy();
      greeted = true;
      // One control plane at a time: the newest (a restarted one) replaces a wedged one.
      if (controlPlane && controlPlane !== socket) controlPlane.destroy();
      controlPlane = socket;
      log("control plane connected");
      return;
    }
    void handle(socket, m).catch((e: Error) => log(`handling ${m.t}: ${e.stack ?? e.message}`));
  });
  socket.on("error", () => {});
  socket.on("close", () => {
    if (controlPlane !== socket) return;
    controlPlane = undefined;
    log("control plane disconnected; serving on from what it last sent");
    for (const wake of wakes.values())
      wake.reject(new Error(`${NO_CONTROL_PLANE} (it stopped while starting the app)`));
    wakes.clear();
  });
}

let channel: Server | undefined;
let exiting = false;
async function exit(why: string): Promise<never> {
  if (!exiting) {
    exiting = true;
    log(`exiting: ${why}`);
    await gateway.closeAll();
    channel?.close();
    rmSync(socketPath(paths.home), { force: true });
    db.close();
  }
  process.exit(0);
}

/** True when another gateway of this home answers on the socket. */
function answering(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createConnection(path);
    probe.once("connect", () => {
      probe.destroy();
      resolve(true);
    });
    probe.once("error", () => resolve(false));
  });
}

async function main(): Promise<void> {
  const path = socketPath(paths.home);
  // Never two gateways for one home: the second leaves.
  if (await answering(path)) {
    log("another gateway already serves this home");
    process.exit(0);
  }
  rmSync(path, { force: true });
  channel = createServer(connected);
  const umask = process.umask(0o177); // the socket is created 0600: only the home's owner
  try {
    await new Promise<void>((resolve, reject) => {
      channel!.once("error", reject);
      channel!.listen(path, resolve);
    });
  } finally {
    process.umask(umask);
  }
  setInterval(report, REPORT_EVERY_MS);
  // A removed home (a finished `caravan serve`, a test's temporary home): nothing to serve.
  setInterval(() => existsSync(paths.db) || void exit("its home was removed"), HOME_CHECK_MS);
  process.on("SIGTERM", () => void exit("SIGTERM"));
  process.on("SIGINT", () => void exit("SIGINT"));
  log(`listening on ${path}`);
}

await main();
