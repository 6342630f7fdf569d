import type { Server } from "node:http";
import { CaravanError, describeValue } from "../errors.ts";
import {
  AppEnvironment,
  type AppEnvironmentOptions,
  type ServeKind,
  type ServerHandle,
} from "./environment.ts";
import type { Input } from "./inputs.ts";
import { fail } from "./validation.ts";

/** Closes an HTTP server gracefully: no new connections, idle ones dropped, in-flight ones finish. */
function closeHttpServer(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    server.close((err) => (err ? reject(err) : resolve()));
    server.closeIdleConnections();
  });
}

function listening(server: Server): Promise<void> {
  return new Promise((resolve, reject) => {
    if (server.listening) return resolve();
    server.once("listening", () => resolve());
    server.once("error", reject);
  });
}

/**
 * Options of an app served from a framework instance: those of `AppEnvironment` but `command`
 * and `args`, plus `app`. (`inputs` stays outside `Omit`, so input names are inferred.)
 */
export type FrameworkAppOptions<InputName extends string, App> = Omit<
  AppEnvironmentOptions,
  "command" | "args" | "inputs"
> & { inputs?: Input<InputName>[]; app: App };

/** The subset of a Fastify instance caravan uses (no import of fastify itself). */
export interface FastifyLike {
  listen(opts: { port: number; host: string }): Promise<string>;
  close(): Promise<unknown>;
}

/**
 * An app served from a Fastify instance (the seed's `FastAPIAppEnvironment`).
 * @example new FastifyAppEnvironment({ name: "api", app: Fastify(), requiresAuth: false })
 */
export class FastifyAppEnvironment<
  InputName extends string = string,
> extends AppEnvironment<InputName> {
  readonly app: FastifyLike;
  constructor(opts: FrameworkAppOptions<InputName, FastifyLike>) {
    if (
      !opts?.app ||
      typeof opts.app.listen !== "function" ||
      typeof opts.app.close !== "function"
    ) {
      fail(
        "VALIDATION",
        `FastifyAppEnvironment "${opts?.name}"`,
        `app must be a Fastify instance (Fastify()), got ${describeValue(opts?.app)}`,
      );
    }
    super(opts);
    this.app = opts.app;
  }
  override get serveKind(): ServeKind {
    return "fastify";
  }
  override async serveOn(port: number, host: string): Promise<ServerHandle> {
    await this.app.listen({ port, host });
    return { close: async () => void (await this.app.close()) };
  }
}

/** The subset of a Hono app caravan uses. */
export interface HonoLike {
  fetch: (request: Request, ...rest: any[]) => Response | Promise<Response>;
}

/** An app served from a Hono instance, with `@hono/node-server`. */
export class HonoAppEnvironment<
  InputName extends string = string,
> extends AppEnvironment<InputName> {
  readonly app: HonoLike;
  constructor(opts: FrameworkAppOptions<InputName, HonoLike>) {
    if (!opts?.app || typeof opts.app.fetch !== "function") {
      fail(
        "VALIDATION",
        `HonoAppEnvironment "${opts?.name}"`,
        `app must be a Hono instance (new Hono()), got ${describeValue(opts?.app)}`,
      );
    }
    super(opts);
    this.app = opts.app;
  }
  override get serveKind(): ServeKind {
    return "hono";
  }
  override async serveOn(port: number, host: string): Promise<ServerHandle> {
    // An optional peer dependency of this package: the user's project installs it with hono.
    const { serve } = await import("@hono/node-server").catch((e: unknown) => {
      throw new CaravanError(
        "LOAD_FAILED",
        `HonoAppEnvironment "${this.name}" is served with @hono/node-server, which is not installed: npm install @hono/node-server (${(e as Error)?.message ?? e})`,
      );
    });
    const server = serve({ fetch: this.app.fetch, port, hostname: host }) as unknown as Server;
    await listening(server);
    return { close: () => closeHttpServer(server) };
  }
}

/** The subset of an Express app caravan uses. */
export interface ExpressLike {
  listen(port: number, host: string, callback?: () => void): Server;
}

/** An app served from an Express application. */
export class ExpressAppEnvironment<
  InputName extends string = string,
> extends AppEnvironment<InputName> {
  readonly app: ExpressLike;
  constructor(opts: FrameworkAppOptions<InputName, ExpressLike>) {
    if (!opts?.app || typeof opts.app.listen !== "function") {
      fail(
        "VALIDATION",
        `ExpressAppEnvironment "${opts?.name}"`,
        `app must be an Express application (express()), got ${describeValue(opts?.app)}`,
      );
    }
    super(opts);
    this.app = opts.app;
  }
  override get serveKind(): ServeKind {
    return "express";
  }
  override async serveOn(port: number, host: string): Promise<ServerHandle> {
    const server = this.app.listen(port, host);
    await listening(server);
    return { close: () => closeHttpServer(server) };
  }
}
