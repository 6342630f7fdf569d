/**
 * `GET /v1/watch`: a server-sent event stream of one project/domain, so a browser (the web
 * console) sees a change within moments and never polls. Pushed when the store records a
 * change (a state, an event, a run), at most every `MIN_GAP_MS` per scope; status also every
 * second while a client listens, since traffic and replicas change without a store write.
 * Every stream of a scope shares one computation of it (a `ScopeFeed`).
 *
 * - `status`: `{ environments }`, as `GET /v1/status` answers, each with `health` (as
 *   `caravan status --json`); sent when it differs from the last one the stream got.
 * - `event`: one event (`GET /v1/events`' shape), each once, in order.
 * - `runs`: `{ runs }`, the scope's newest 100 task runs (without outputs), when they changed.
 *
 * A client that reads slowly is skipped while more than `BACKLOG_BYTES` wait for it (it
 * catches up from its last event later: status and runs are the latest anyway) and cut when
 * it has not drained for `STALLED_MS`; it never makes the daemon buffer without bound.
 */
import type { ServerResponse } from "node:http";
import type { FastifyInstance } from "fastify";
import type { Scope } from "../../contract.ts";
import { dependencyHealth, healthKey } from "../../health.ts";
import { ROUTES } from "../../http-routes.ts";
import type { ControlPlane } from "../control-plane.ts";
import { keyOf, type EventRecord } from "../store.ts";

/** A change right after the last push waits this long (bursts of writes go out as one). */
const MIN_GAP_MS = 25;
const TICK_MS = 1_000;
/** A comment line now and then keeps proxies and idle timers from closing the stream. */
const HEARTBEAT_MS = 15_000;
/** Events read per push: a stream further behind gets the rest on the next pushes, none skipped. */
const EVENTS_PER_PUSH = 1_000;
/** Past this much unsent data a stream is not written to until it drains. */
const BACKLOG_BYTES = 1 << 20;
/** A stream that has not drained below `BACKLOG_BYTES` for this long is closed. */
const STALLED_MS = 30_000;

/** The scope's environments as status shows them, with their dependency health. */
export async function statusWithHealth(plane: Pick<ControlPlane, "status">, scope: Scope) {
  const environments = await plane.status(scope);
  const health = dependencyHealth(
    environments.map((e) => ({ ...e, dependsOn: e.dependsOn ?? [] })),
  );
  return environments.map((e) => {
    const h = health.get(healthKey(e));
    return h ? { ...e, health: h } : e;
  });
}

/** What a stream writes to (a `ServerResponse`; a test's stand-in). */
export type StreamTarget = Pick<ServerResponse, "write" | "writableLength" | "destroy">;

/** One client's stream: what it was last sent. */
export interface Stream {
  res: StreamTarget;
  status: string;
  runs: string;
  /** The id of the last event it was sent. */
  lastEvent: number;
  /** Since when it has had more than `BACKLOG_BYTES` unsent (0: it has not). */
  stalledSince?: number;
}

/** What a feed asks the control plane. */
export type FeedSource = Pick<ControlPlane, "status" | "listRuns" | "events"> & {
  store: Pick<ControlPlane["store"], "onChange">;
};

/** The streams of one scope, fed by one computation per change or tick. */
export class ScopeFeed {
  readonly streams = new Set<Stream>();
  private timer: NodeJS.Timeout | undefined;
  private lastPush = 0;
  private pushing = false;
  private again = false;
  private readonly tick: NodeJS.Timeout;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly plane: FeedSource,
    private readonly scope: Scope,
  ) {
    this.unsubscribe = plane.store.onChange(() => this.soon());
    this.tick = setInterval(() => void this.push(), TICK_MS);
    this.heartbeat = setInterval(() => {
      for (const s of this.streams) if (this.writable(s)) s.res.write(": keep-alive\n\n");
    }, HEARTBEAT_MS);
  }

  /** False while the stream has too much unsent; a stream stalled for too long is closed. */
  private writable(s: Stream): boolean {
    if (s.res.writableLength <= BACKLOG_BYTES) {
      s.stalledSince = 0;
      return true;
    }
    const now = Date.now();
    s.stalledSince ||= now;
    if (now - s.stalledSince >= STALLED_MS) {
      this.streams.delete(s);
      s.res.destroy();
    }
    return false;
  }

  /** At once after a quiet spell; else when `MIN_GAP_MS` has passed since the last push. */
  soon(): void {
    if (this.timer) return;
    const wait = Math.max(0, this.lastPush + MIN_GAP_MS - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.push();
    }, wait);
  }

  async push(): Promise<void> {
    if (this.pushing) return void (this.again = true); // one at a time, in order
    this.pushing = true;
    this.lastPush = Date.now();
    try {
      const status = JSON.stringify({
        environments: await statusWithHealth(this.plane, this.scope),
      });
      const runs = JSON.stringify({ runs: await this.plane.listRuns(this.scope, { limit: 100 }) });
      const ready = [...this.streams].filter((s) => this.writable(s));
      const from = Math.min(...ready.map((s) => s.lastEvent));
      const events: EventRecord[] = ready.length
        ? this.plane.events(this.scope, from, EVENTS_PER_PUSH)
        : [];
      // A full page: there may be more after it, for the streams furthest behind.
      if (events.length === EVENTS_PER_PUSH) this.again = true;
      for (const s of ready) {
        if (s.status !== status) s.res.write(`event: status\ndata: ${(s.status = status)}\n\n`);
        for (const e of events)
          if (e.id > s.lastEvent) {
            s.res.write(`event: event\ndata: ${JSON.stringify(e)}\n\n`);
            s.lastEvent = e.id;
          }
        if (s.runs !== runs) s.res.write(`event: runs\ndata: ${(s.runs = runs)}\n\n`);
      }
    } catch (e) {
      const message = JSON.stringify({ message: (e as Error).message });
      for (const s of this.streams)
        if (this.writable(s)) s.res.write(`event: error\ndata: ${message}\n\n`);
    } finally {
      this.pushing = false;
      if (this.again) {
        this.again = false;
        void this.push();
      }
    }
  }

  close(): void {
    this.unsubscribe();
    clearInterval(this.tick);
    clearInterval(this.heartbeat);
    if (this.timer) clearTimeout(this.timer);
  }
}

export function registerWatch(app: FastifyInstance, plane: ControlPlane): void {
  const feeds = new Map<string, ScopeFeed>();
  app.get<{ Querystring: Scope & { after?: string } }>(ROUTES.watch, async (req, reply) => {
    const scope = { project: req.query.project, domain: req.query.domain };
    const key = keyOf(scope, "");
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    const stream: Stream = {
      res,
      status: "",
      runs: "",
      // Events after `after` (a reconnecting client says where it was), else only new ones.
      lastEvent: Number(req.query.after ?? plane.events(scope, 0, 1).at(-1)?.id ?? 0),
    };
    let feed = feeds.get(key);
    if (!feed) feeds.set(key, (feed = new ScopeFeed(plane, scope)));
    feed.streams.add(stream);
    req.raw.on("close", () => {
      feed.streams.delete(stream);
      if (feed.streams.size === 0 && feeds.get(key) === feed) {
        feed.close();
        feeds.delete(key);
      }
    });
    // The newcomer gets the current state now (the others see nothing new in it).
    void feed.push();
  });
}
