/**
 * The local control plane's HTTP API: the ControlPlane's methods, one route each, behind a
 * bearer token. Bound to 127.0.0.1 only.
 */
import { timingSafeEqual } from "node:crypto";
import { Readable } from "node:stream";
import Fastify, { type FastifyInstance } from "fastify";
import type { DeployRequest, RunFilter, RunPrune, RunRequest, Scope } from "../../contract.ts";
import { MAX_RUN_ARGS_BYTES } from "../../../sdk/run-limits.ts";
import { HTTP_STATUS_OF, OTLP_BASE, OTLP_ROUTES, ROUTES, runRequestOf } from "../../http-routes.ts";
import type { TraceFilter } from "../../contract.ts";
import { parseTraceparent, TRACEPARENT } from "../../../runtime/trace-context.ts";
import { runTokenScope, type ControlPlane } from "../control-plane.ts";
import { CaravanError, isCaravanError } from "../../../errors.ts";
import { checkRequest } from "./validate.ts";
import {
  apiUrlOf,
  hasConsoleSession,
  isConsoleLogin,
  isConsolePath,
  refuseConsole,
  registerConsole,
} from "./console.ts";
import { registerWatch } from "./watch.ts";

/** An OTLP export request's size, at most (an SDK's batch is far smaller). */
const OTLP_BODY_LIMIT = 8 * 1024 * 1024;

export function buildApi(
  plane: ControlPlane,
  token: string,
  onShutdown: (stopApps: boolean) => void,
  /** Requests wait for this (the control plane's recovery) before they are handled. */
  ready: Promise<void> = Promise.resolve(),
): FastifyInstance {
  const app = Fastify({
    logger: false,
    forceCloseConnections: true,
    // The console reaches these routes under its own path (see console.ts).
    rewriteUrl: (req) => apiUrlOf(req.url ?? "/"),
  });
  const expected = Buffer.from(`Bearer ${token}`);

  // What a request may do: everything (the control plane's token), or runs in one scope (the
  // token apps and task workers get).
  const runScopes = new WeakMap<object, Scope>();
  const allowed = (req: { raw: object }, scope: { project: string; domain: string }) => {
    const only = runScopes.get(req.raw);
    if (only && (only.project !== scope.project || only.domain !== scope.domain)) {
      throw new CaravanError(
        "UNAUTHORIZED",
        `this token is for runs in ${only.project}/${only.domain}, not ${scope.project}/${scope.domain}`,
      );
    }
  };

  app.addHook("onRequest", async (req, reply) => {
    await ready;
    const header = req.headers.authorization ?? "";
    const given = Buffer.from(header);
    if (given.length === expected.length && timingSafeEqual(given, expected)) return;
    // The web console: a browser's session cookie (from `caravan console`'s login link).
    if (isConsoleLogin(req.url) || hasConsoleSession(req, plane)) return;
    if (isConsolePath(req.url))
      return refuseConsole(reply, "This page needs a session from a login link.");
    // A run token (apps', task workers') starts runs and exports telemetry, nothing else.
    const scope =
      (req.url.startsWith(ROUTES.runs) || req.url.startsWith(`${OTLP_BASE}/`)) &&
      header.startsWith("Bearer run_")
        ? runTokenScope(token, header.slice(7))
        : undefined;
    if (scope) runScopes.set(req.raw, scope);
    else {
      const error = new CaravanError(
        "UNAUTHORIZED",
        "missing or wrong token: send 'Authorization: Bearer <token>' with the token from $CARAVAN_HOME/token",
      );
      return reply.code(401).send({ error: error.toJSON() });
    }
  });

  app.setErrorHandler((err, req, reply) => {
    if (isCaravanError(err))
      return reply.code(HTTP_STATUS_OF[err.code] ?? 422).send({ error: err.toJSON() });
    if (
      (err as { code?: string }).code === "FST_ERR_CTP_BODY_TOO_LARGE" &&
      req.url.startsWith(ROUTES.runs)
    ) {
      const error = new CaravanError(
        "VALIDATION",
        `this run request is ${req.headers["content-length"] ?? "too many"} bytes; a run's arguments are at most ${MAX_RUN_ARGS_BYTES} bytes as JSON: pass large data by reference (a file path, a URL, an object key)`,
      );
      return reply.code(413).send({ error: error.toJSON() });
    }
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    const message = (err as Error)?.message ?? String(err);
    return reply
      .code(status)
      .send({ error: { code: status < 500 ? "USAGE" : "INTERNAL", message, details: {} } });
  });

  // Every body and query is checked here, whoever sent it (400 naming the field).
  app.addHook("preHandler", async (req) =>
    checkRequest(req.routeOptions.url, req.method, req.body, req.query),
  );

  // `starts`: the start queue's counters (bound, starting, waiting, the most ever at once).
  // `telemetry`: what the OTLP receiver took, kept and dropped (see telemetry/receiver.ts).
  app.get(ROUTES.health, async () => ({
    ok: true,
    pid: process.pid,
    starts: plane.startStats(),
    telemetry: plane.telemetry.stats(),
    warmPool: plane.warmPoolStats(),
  }));

  app.post<{ Body: DeployRequest }>(ROUTES.deploy, async (req) => plane.deploy(req.body));
  app.post<{ Params: { name: string }; Body: { scope?: Scope } }>(ROUTES.jobRerun, async (req) => {
    const scope = req.body?.scope;
    if (typeof scope?.project !== "string" || typeof scope?.domain !== "string")
      throw new CaravanError("USAGE", 'a rerun needs a JSON body {"scope": {"project", "domain"}}');
    return plane.rerunJob(scope, req.params.name);
  });

  app.post<{ Body: { scope: Scope; names: string[] } }>(ROUTES.reserve, async (req) => ({
    endpoints: await plane.reserve(req.body.scope, req.body.names),
  }));
  app.post<{ Body: DeployRequest }>(ROUTES.prepare, async (req) => {
    await plane.prepare(req.body);
    return { ok: true };
  });
  app.post<{ Body: { scope: Scope; name: string } }>(ROUTES.discard, async (req) => {
    await plane.discard(req.body.scope, req.body.name);
    return { ok: true };
  });

  app.get<{ Querystring: Partial<Scope> }>(ROUTES.status, async (req) => {
    const { project, domain } = req.query;
    return {
      environments: await plane.status(project && domain ? { project, domain } : undefined),
    };
  });

  for (const action of ["stop", "delete"] as const) {
    app.post<{ Body: { scope: Scope; names: string[]; cascade?: boolean } }>(
      ROUTES[action],
      async (req) => {
        const { scope, names, cascade } = req.body;
        return { done: await plane[action](scope, names, { cascade: cascade ?? false }) };
      },
    );
  }

  app.get<{ Querystring: Scope & { name: string; tail?: string; follow?: string } }>(
    ROUTES.logs,
    async (req, reply) => {
      const { project, domain, name, tail, follow } = req.query;
      const abort = new AbortController();
      req.raw.on("close", () => abort.abort());
      const lines = plane.logs({ project, domain }, name, {
        ...(tail !== undefined ? { tail: Number(tail) } : {}),
        follow: follow === "true",
        signal: abort.signal,
      });
      // Fail fast (404) for an unknown app, before the 200 header is sent.
      const iterator = lines[Symbol.asyncIterator]();
      const first = await iterator.next();
      async function* rest() {
        if (!first.done) yield first.value + "\n";
        for (let r = await iterator.next(); !r.done; r = await iterator.next())
          yield r.value + "\n";
      }
      return reply.type("text/plain; charset=utf-8").send(Readable.from(rest()));
    },
  );

  // Runs. `wait` (ms, at most 30 s) holds the answer until the run finished, so a short task
  // takes one round trip; a client loops on GET /v1/runs/:id for longer ones.
  const waitOf = (q: { wait?: string }) => Math.min(30_000, Math.max(0, Number(q.wait) || 0));
  app.post<{ Body: RunRequest; Querystring: { wait?: string } }>(
    ROUTES.runs,
    // Arguments are bounded (MAX_RUN_ARGS_BYTES, checked with a clear error by startRun); a
    // body far past that is refused before it is read.
    { bodyLimit: MAX_RUN_ARGS_BYTES + 64 * 1024 },
    async (req, reply) => {
      runRequestOf(req.body);
      allowed(req, req.body.scope);
      // The caller's trace (its runtime sends the header): the run's span joins it.
      const parent = parseTraceparent(req.headers[TRACEPARENT]);
      if (parent && !req.body.traceparent) req.body.traceparent = String(req.headers[TRACEPARENT]);
      const run = await plane.startRun(req.body, { waitMs: waitOf(req.query) });
      return reply.code(201).send({ run });
    },
  );
  app.get<{ Params: { id: string }; Querystring: { wait?: string } }>(ROUTES.run, async (req) => {
    // A run token's scope is checked first: another scope learns nothing, not even by waiting.
    if (runScopes.has(req.raw)) allowed(req, await plane.getRun(req.params.id));
    return { run: await plane.getRun(req.params.id, { waitMs: waitOf(req.query) }) };
  });
  // Deleting runs takes the control plane's token (a run token only starts and reads runs).
  const adminOnly = (req: { raw: object }, what: string) => {
    if (runScopes.has(req.raw))
      throw new CaravanError(
        "UNAUTHORIZED",
        `a run token cannot ${what}; use the control plane's token (caravan runs delete|prune)`,
      );
  };
  app.delete<{ Params: { id: string } }>(ROUTES.run, async (req) => {
    adminOnly(req, "delete runs");
    await plane.deleteRun(req.params.id);
    return { deleted: req.params.id };
  });
  app.post<{ Body: Partial<Scope> & RunPrune }>(ROUTES.runsPrune, async (req) => {
    adminOnly(req, "prune runs");
    const b = (req.body ?? {}) as Record<string, unknown>;
    const count = (v: unknown, field: string) => {
      if (v !== undefined && !(Number.isSafeInteger(v) && (v as number) >= 0))
        throw new CaravanError(
          "VALIDATION",
          `${field} must be a whole number >= 0, got ${JSON.stringify(v)}`,
        );
      return v as number | undefined;
    };
    const olderThanMs = count(b.olderThanMs, "olderThanMs");
    const keep = count(b.keep, "keep");
    if (olderThanMs === undefined && keep === undefined)
      throw new CaravanError("VALIDATION", "say which runs to prune: olderThanMs and/or keep");
    const { project, domain } = b;
    if (
      (project === undefined) !== (domain === undefined) ||
      [project, domain].some((v) => v !== undefined && typeof v !== "string")
    )
      throw new CaravanError(
        "VALIDATION",
        "project and domain go together, as strings (or neither: every scope)",
      );
    const scope = project ? { project: project as string, domain: domain as string } : undefined;
    return {
      deleted: await plane.pruneRuns(scope, {
        ...(olderThanMs !== undefined ? { olderThanMs } : {}),
        ...(keep !== undefined ? { keep } : {}),
      }),
    };
  });
  app.get<{ Querystring: Partial<Scope> & { task?: string; status?: string; limit?: string } }>(
    ROUTES.runs,
    async (req) => {
      const { project, domain, task, status, limit } = req.query;
      const scope = project && domain ? { project, domain } : runScopes.get(req.raw);
      if (scope) allowed(req, scope);
      const filter: RunFilter = {};
      if (task) filter.task = task;
      if (status) filter.status = status as RunFilter["status"];
      if (limit) filter.limit = Math.max(1, Math.min(1000, Number(limit) || 100));
      return { runs: await plane.listRuns(scope, filter) };
    },
  );

  // OTLP/HTTP: protobuf or JSON in; the answer in the request's encoding (an empty
  // protobuf message is a valid export response). What the queue cannot take is dropped and
  // counted, never waited for.
  app.addContentTypeParser(
    "application/x-protobuf",
    { parseAs: "buffer", bodyLimit: OTLP_BODY_LIMIT },
    (_req, body, done) => done(null, body),
  );
  for (const signal of ["traces", "logs", "metrics"] as const) {
    app.post(OTLP_ROUTES[signal], { bodyLimit: OTLP_BODY_LIMIT }, async (req, reply) => {
      const answer = plane.telemetry.accept(signal, req.body, runScopes.get(req.raw));
      if (Buffer.isBuffer(req.body))
        return reply.type("application/x-protobuf").send(Buffer.alloc(0));
      return answer;
    });
  }
  type Query = Record<string, string | undefined>;
  app.get<{ Querystring: Query }>(ROUTES.traces, async (req) => {
    const { app: name, project, domain, status, minDurationMs, limit } = req.query;
    return plane.traces.list({
      ...(name ? { app: name } : {}),
      ...(project ? { project } : {}),
      ...(domain ? { domain } : {}),
      ...(status ? { status: status as TraceFilter["status"] } : {}),
      ...(minDurationMs ? { minDurationMs: Number(minDurationMs) } : {}),
      ...(limit ? { limit: Number(limit) } : {}),
    });
  });
  app.get<{ Params: { id: string } }>(ROUTES.trace, async (req) => plane.traces.get(req.params.id));
  // What the console shows of an app's OTLP logs and metrics (validate.ts bounds the query).
  app.get<{ Querystring: Query }>(ROUTES.logRecords, async (req) => {
    const { app: name, project, domain, limit } = req.query;
    return {
      logs: plane.telemetry.logRecords({
        app: name!,
        project,
        domain,
        ...(limit ? { limit: Number(limit) } : {}),
      }),
    };
  });
  app.get<{ Querystring: Query }>(ROUTES.appMetrics, async (req) => {
    const { app: name, project, domain, name: metric, limit } = req.query;
    return {
      metrics: plane.telemetry.metrics({
        app: name!,
        project,
        domain,
        ...(metric ? { name: metric } : {}),
        ...(limit ? { limit: Number(limit) } : {}),
      }),
    };
  });

  // Prometheus exposition of the gateway's traffic.
  app.get(ROUTES.metrics, async (_req, reply) =>
    reply.type("text/plain; version=0.0.4").send(await plane.metrics()),
  );

  // Tokens for apps' public endpoints (stored hashed; a new token's value is shown once).
  const tokens = plane.tokens;
  app.post<{ Body: { name?: string } }>(ROUTES.tokens, async (req, reply) =>
    reply.code(201).send({ token: await tokens.create(req.body?.name) }),
  );
  app.get(ROUTES.tokens, async () => ({ tokens: await tokens.list() }));
  app.delete<{ Params: { id: string } }>(ROUTES.token, async (req) => {
    await tokens.revoke(req.params.id);
    return { revoked: req.params.id };
  });
  app.post<{ Body: { scope: Scope; name: string } }>(ROUTES.loginLink, async (req) => ({
    url: await tokens.link(req.body.scope, req.body.name),
  }));

  app.post(ROUTES.consoleLink, async () => ({ url: plane.consoleSessions.link() }));

  // What the console's actions need beyond stop and delete.
  app.post<{ Body: { scope: Scope; name: string } }>(ROUTES.start, async (req) =>
    plane.start(req.body.scope, req.body.name),
  );
  app.post<{ Body: { scope: Scope; name: string } }>(ROUTES.restart, async (req) =>
    plane.restart(req.body.scope, req.body.name),
  );
  app.post<{ Body: { scope: Scope; name: string; replicas: number } }>(ROUTES.scale, async (req) =>
    plane.scale(req.body.scope, req.body.name, req.body.replicas),
  );
  app.get<{ Querystring: Scope & { after?: string; limit?: string } }>(
    ROUTES.events,
    async (req) => {
      const { project, domain, after, limit } = req.query;
      return {
        events: plane.events(
          { project, domain },
          Number(after ?? 0),
          Math.max(1, Math.min(1000, Number(limit ?? 200))),
        ),
      };
    },
  );
  app.get<{ Params: { name: string }; Querystring: Scope }>(ROUTES.environment, async (req) =>
    plane.describe({ project: req.query.project, domain: req.query.domain }, req.params.name),
  );
  registerWatch(app, plane);
  registerConsole(app, plane);

  app.post<{ Body: { stopApps?: boolean } }>(ROUTES.shutdown, async (req) => {
    setImmediate(() => onShutdown(req.body?.stopApps ?? true));
    return { ok: true };
  });

  return app;
}
