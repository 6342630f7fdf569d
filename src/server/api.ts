/**
 * The local control plane's HTTP API: the ControlPlane's methods, one route each, behind a
 * bearer token. Bound to 127.0.0.1 only.
 */
import { timingSafeEqual } from "node:crypto";
import { Readable } from "node:stream";
import Fastify, { type FastifyInstance } from "fastify";
import type { DeployRequest, Scope } from "../backends/contract.ts";
import type { ControlPlane } from "../backends/local/control-plane.ts";
import { CaravanError, isCaravanError, type ErrorCode } from "../errors.ts";

const STATUS_OF: Partial<Record<ErrorCode, number>> = {
  UNAUTHORIZED: 401,
  NOT_DEPLOYED: 404,
  DEPENDENTS_EXIST: 409,
  USAGE: 400,
  VALIDATION: 400,
};

export function buildApi(
  plane: ControlPlane,
  token: string,
  onShutdown: (stopApps: boolean) => void,
): FastifyInstance {
  const app = Fastify({ logger: false, forceCloseConnections: true });
  const expected = Buffer.from(`Bearer ${token}`);

  app.addHook("onRequest", async (req, reply) => {
    const given = Buffer.from(req.headers.authorization ?? "");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      const error = new CaravanError(
        "UNAUTHORIZED",
        "missing or wrong token: send 'Authorization: Bearer <token>' with the token from $CARAVAN_HOME/token",
      );
      return reply.code(401).send({ error: error.toJSON() });
    }
  });

  app.setErrorHandler((err, _req, reply) => {
    if (isCaravanError(err))
      return reply.code(STATUS_OF[err.code] ?? 422).send({ error: err.toJSON() });
    const status = (err as { statusCode?: number }).statusCode ?? 500;
    const message = (err as Error)?.message ?? String(err);
    return reply
      .code(status)
      .send({ error: { code: status < 500 ? "USAGE" : "INTERNAL", message, details: {} } });
  });

  app.get("/v1/health", async () => ({ ok: true, pid: process.pid }));

  app.post<{ Body: DeployRequest }>("/v1/deploy", async (req) => plane.deploy(req.body));

  app.post<{ Body: { scope: Scope; names: string[] } }>("/v1/reserve", async (req) => ({
    endpoints: await plane.reserve(req.body.scope, req.body.names),
  }));
  app.post<{ Body: DeployRequest }>("/v1/prepare", async (req) => {
    await plane.prepare(req.body);
    return { ok: true };
  });
  app.post<{ Body: { scope: Scope; name: string } }>("/v1/discard", async (req) => {
    await plane.discard(req.body.scope, req.body.name);
    return { ok: true };
  });

  app.get<{ Querystring: Partial<Scope> }>("/v1/status", async (req) => {
    const { project, domain } = req.query;
    return {
      environments: await plane.status(project && domain ? { project, domain } : undefined),
    };
  });

  for (const action of ["stop", "delete"] as const) {
    app.post<{ Body: { scope: Scope; names: string[]; cascade?: boolean } }>(
      `/v1/${action}`,
      async (req) => {
        const { scope, names, cascade } = req.body;
        return { done: await plane[action](scope, names, { cascade: cascade ?? false }) };
      },
    );
  }

  app.get<{ Querystring: Scope & { name: string; tail?: string; follow?: string } }>(
    "/v1/logs",
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

  app.post<{ Body: { stopApps?: boolean } }>("/v1/shutdown", async (req) => {
    setImmediate(() => onShutdown(req.body?.stopApps ?? true));
    return { ok: true };
  });

  return app;
}
