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

/** The scope's environments as status shows them, with their dependency health. */
export async function statusWithHealth(plane: ControlPlane, scope: Scope) {
  const environments = await plane.status(scope);
  const health = dependencyHealth(
    environments.map((e) => ({ ...e, dependsOn: e.dependsOn ?? [] })),
  );
  return environments.map((e) => {
    const h = health.get(healthKey(e));
    return h ? { ...e, health: h } : e;
  });
}

/** One client's stream: what it was last sent. */
interface Stream {
  res: ServerResponse;
  status: string;
  runs: string;
  /** The id of the last event it was sent. */
  lastEvent: number;
}

/** The streams of one scope, fed by one computation per change or tick. */
class ScopeFeed {
  readonly streams = new Set<Stream>();
  private timer: NodeJS.Timeout | undefined;
  private lastPush = 0;
  private pushing = false;
  private again = false;
  private readonly tick: NodeJS.Timeout;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly plane: ControlPlane,
    private readonly scope: Scope,
  ) {
    this.unsubscribe = plane.store.onChange(() => this.soon());
    this.tick = setInterval(() => void this.push(), TICK_MS);
    this.heartbeat = setInterval(() => {
      for (const s of this.streams) s.res.write(": keep-alive\n\n");
    }, HEARTBEAT_MS);
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
      const from = Math.min(...[...this.streams].map((s) => s.lastEvent));
      const events: EventRecord[] = this.streams.size
        ? this.plane.events(this.scope, from, 1000)
        : [];
      for (const s of this.streams) {
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
      for (const s of this.streams) s.res.write(`event: error\ndata: ${message}\n\n`);
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
