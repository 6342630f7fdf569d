/**
 * `GET /v1/watch`: a server-sent event stream of one project/domain, so a browser (the web
 * console) sees a change within moments and never polls. Pushed when the store records a
 * change (a state, an event, a run), coalesced over a few ms; status also every second while
 * a client listens, since traffic and replicas change without a store write.
 *
 * - `status`: `{ environments }`, as `GET /v1/status` answers, each with `health` (as
 *   `caravan status --json`); sent when it differs from the last one sent.
 * - `event`: one event (`GET /v1/events`' shape), each once, in order.
 * - `runs`: `{ runs }`, the scope's newest 100 task runs (without outputs), when they changed.
 */
import type { FastifyInstance } from "fastify";
import type { Scope } from "../../contract.ts";
import { dependencyHealth, healthKey } from "../../health.ts";
import { ROUTES } from "../../http-routes.ts";
import type { ControlPlane } from "../control-plane.ts";

/** Changes closer together than this go out as one message. */
const COALESCE_MS = 25;
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

export function registerWatch(app: FastifyInstance, plane: ControlPlane): void {
  app.get<{ Querystring: Scope & { after?: string } }>(ROUTES.watch, async (req, reply) => {
    const scope = { project: req.query.project, domain: req.query.domain };
    // Events after `after` (a reconnecting client says where it was), else only new ones.
    let lastEvent = Number(req.query.after ?? plane.events(scope, 0, 1).at(-1)?.id ?? 0);
    let lastStatus = "";
    let lastRuns = "";
    let timer: NodeJS.Timeout | undefined;
    let closed = false;
    let sending = false;
    let again = false;

    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    const write = (type: string, data: unknown) =>
      res.write(`event: ${type}\ndata: ${JSON.stringify(data)}\n\n`);

    const send = async () => {
      if (closed) return;
      if (sending) return void (again = true); // one at a time, in order
      sending = true;
      try {
        const status = JSON.stringify({ environments: await statusWithHealth(plane, scope) });
        if (closed) return;
        if (status !== lastStatus) res.write(`event: status\ndata: ${(lastStatus = status)}\n\n`);
        for (const e of plane.events(scope, lastEvent, 500)) {
          write("event", e);
          lastEvent = e.id;
        }
        const runs = JSON.stringify({ runs: await plane.listRuns(scope, { limit: 100 }) });
        if (runs !== lastRuns) res.write(`event: runs\ndata: ${(lastRuns = runs)}\n\n`);
      } catch (e) {
        write("error", { message: (e as Error).message });
      } finally {
        sending = false;
        if (again) {
          again = false;
          void send();
        }
      }
    };
    const soon = () => {
      if (!timer) timer = setTimeout(() => ((timer = undefined), void send()), COALESCE_MS);
    };
    const unsubscribe = plane.store.onChange(soon);
    const tick = setInterval(() => void send(), TICK_MS);
    const heartbeat = setInterval(() => res.write(": keep-alive\n\n"), HEARTBEAT_MS);
    req.raw.on("close", () => {
      closed = true;
      unsubscribe();
      clearInterval(tick);
      clearInterval(heartbeat);
      if (timer) clearTimeout(timer);
    });
    void send();
  });
}
