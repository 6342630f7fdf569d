/**
 * The backend contract over caravan's control-plane HTTP API (`http-routes.ts`). The local
 * backend's daemon serves that API; code inside an app or a task worker reaches its run API
 * with this client too (`CARAVAN_API_URL` and a run token), whichever backend started it.
 */
import { request as httpRequest } from "node:http";
import { CaravanError } from "../errors.ts";
import type {
  Backend,
  DeployRequest,
  DeployResult,
  Endpoints,
  EnvironmentStatus,
  LogsOptions,
  NewToken,
  RunFilter,
  RunPrune,
  RunRecord,
  RunRequest,
  Scope,
  TokenAccess,
  TokenInfo,
  TraceAccess,
} from "./contract.ts";
import { ROUTES, pathOf } from "./http-routes.ts";

/**
 * One JSON request over node:http(s), not `fetch`: loading fetch (undici) costs a short-lived
 * CLI more than the whole answer of the local control plane (`caravan status`). Sockets are
 * kept alive by the default agents (an idle one does not hold the process open). Rejects
 * when the server cannot be reached; any status resolves, with the body parsed ({} if not JSON).
 * node:https (and TLS) loads only for an https URL.
 */
/** The code of `requestJSON`'s error when its `timeoutMs` ran out. */
const TIMED_OUT = "CARAVAN_TIMED_OUT";

export async function requestJSON(
  url: string,
  opts: { method?: string; token?: string; body?: unknown; timeoutMs?: number } = {},
): Promise<{ status: number; json: unknown }> {
  const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
  const send = url.startsWith("https:") ? (await import("node:https")).request : httpRequest;
  return new Promise((resolve, reject) => {
    const req = send(
      url,
      {
        method: opts.method ?? "GET",
        headers: {
          ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
          ...(body === undefined
            ? {}
            : { "content-type": "application/json", "content-length": Buffer.byteLength(body) }),
        },
        ...(opts.timeoutMs ? { timeout: opts.timeoutMs } : {}),
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          let json: unknown = {};
          try {
            json = JSON.parse(Buffer.concat(chunks).toString("utf8"));
          } catch {
            /* not JSON: the status says what happened */
          }
          resolve({ status: res.statusCode ?? 0, json });
        });
      },
    );
    // Only a request given a timeout has one: a deploy waits for readiness as long as it takes
    // (the default agent's 5 s socket timeout only emits an event, which needs no listener).
    if (opts.timeoutMs)
      req.on("timeout", () =>
        req.destroy(
          Object.assign(new Error(`no answer within ${opts.timeoutMs} ms`), { code: TIMED_OUT }),
        ),
      );
    req.on("error", reject);
    req.end(body);
  });
}

/**
 * How long a read (GET) may wait for its answer: the control plane answers one in milliseconds,
 * so a longer silence is a wedged server, and a `status` must not hang on it. Changes (a deploy
 * waits for readiness as long as it takes) and long polls (their wait added) have no such bound.
 */
export const READ_TIMEOUT_MS = 30_000;

export class HttpBackend implements Backend {
  constructor(
    private url: string,
    private token: string,
    /**
     * For a server not checked before the first call (a round trip less for a short command):
     * finds it again (starting it, or throwing why it cannot be used) when that call could not
     * connect or its token was refused, and the call is made once more. Neither reached the
     * server's handlers, so any call may be repeated.
     */
    private recheck?: () => Promise<{ url: string; token: string }>,
    private readonly readTimeoutMs = READ_TIMEOUT_MS,
  ) {}

  /** One call to the API: JSON in, JSON out; an error answer is thrown as its CaravanError. */
  private async call<T>(method: string, path: string, body?: unknown, waitMs = 0): Promise<T> {
    let res: { status: number; json: unknown };
    const timeoutMs = method === "GET" ? this.readTimeoutMs + waitMs : undefined;
    try {
      res = await requestJSON(`${this.url}${path}`, { method, token: this.token, body, timeoutMs });
    } catch (e) {
      // Refused: nothing reached the server. Reset: a server dying under a read (a GET may be
      // repeated; a change might have reached it). Either way it is found again first.
      const code = (e as NodeJS.ErrnoException).code;
      if (this.recheck && (code === "ECONNREFUSED" || (method === "GET" && code === "ECONNRESET")))
        return this.callAgain(method, path, body, waitMs);
      if ((e as NodeJS.ErrnoException).code === TIMED_OUT)
        throw new CaravanError(
          "SERVER_UNREACHABLE",
          `the control plane at ${this.url} did not answer within ${timeoutMs! / 1000} s (it may be stuck): check caravan server status; caravan server stop --keep-apps stops it without touching the apps, and the next command starts a new one that adopts them`,
        );
      throw new CaravanError(
        "SERVER_UNREACHABLE",
        `cannot reach the control plane at ${this.url}: ${(e as Error).message}; check caravan server status`,
      );
    }
    if (res.status === 401 && this.recheck) return this.callAgain(method, path, body, waitMs);
    this.recheck = undefined; // it answered: it is the server
    const json = res.json as { error?: { code?: string; message?: string } } & T;
    if (res.status < 200 || res.status > 299)
      throw CaravanError.fromJSON(
        json.error ?? { code: "INTERNAL", message: `control plane answered ${res.status}` },
      );
    return json;
  }

  /** `call`, once the server is found again (see `recheck`). */
  private async callAgain<T>(
    method: string,
    path: string,
    body: unknown,
    waitMs: number,
  ): Promise<T> {
    const recheck = this.recheck!;
    this.recheck = undefined;
    ({ url: this.url, token: this.token } = await recheck());
    return this.call(method, path, body, waitMs);
  }

  deploy(request: DeployRequest): Promise<DeployResult> {
    return this.call("POST", ROUTES.deploy, request);
  }

  async status(scope?: Scope): Promise<EnvironmentStatus[]> {
    const path = pathOf(
      ROUTES.status,
      {},
      scope && { project: scope.project, domain: scope.domain },
    );
    return (await this.call<{ environments: EnvironmentStatus[] }>("GET", path)).environments;
  }

  async stop(scope: Scope, names: string[], opts: { cascade?: boolean } = {}): Promise<string[]> {
    return (
      await this.call<{ done: string[] }>("POST", ROUTES.stop, {
        scope,
        names,
        cascade: opts.cascade,
      })
    ).done;
  }

  async delete(scope: Scope, names: string[], opts: { cascade?: boolean } = {}): Promise<string[]> {
    return (
      await this.call<{ done: string[] }>("POST", ROUTES.delete, {
        scope,
        names,
        cascade: opts.cascade,
      })
    ).done;
  }

  async reserve(scope: Scope, names: string[]): Promise<Record<string, Endpoints>> {
    return (
      await this.call<{ endpoints: Record<string, Endpoints> }>("POST", ROUTES.reserve, {
        scope,
        names,
      })
    ).endpoints;
  }

  async prepare(request: DeployRequest): Promise<void> {
    await this.call("POST", ROUTES.prepare, request);
  }

  async discard(scope: Scope, name: string): Promise<void> {
    await this.call("POST", ROUTES.discard, { scope, name });
  }

  async startRun(request: RunRequest, opts: { waitMs?: number } = {}): Promise<RunRecord> {
    const path = pathOf(ROUTES.runs, {}, waitQuery(opts.waitMs));
    return (await this.call<{ run: RunRecord }>("POST", path, request)).run;
  }

  rerunJob(scope: Scope, name: string): Promise<DeployResult> {
    return this.call("POST", pathOf(ROUTES.jobRerun, { name }), { scope });
  }

  async getRun(id: string, opts: { waitMs?: number } = {}): Promise<RunRecord> {
    const path = pathOf(ROUTES.run, { id }, waitQuery(opts.waitMs));
    return (await this.call<{ run: RunRecord }>("GET", path, undefined, opts.waitMs ?? 0)).run;
  }

  async listRuns(scope: Scope | undefined, filter: RunFilter = {}): Promise<RunRecord[]> {
    const query = new URLSearchParams();
    if (scope) {
      query.set("project", scope.project);
      query.set("domain", scope.domain);
    }
    for (const [k, v] of Object.entries(filter)) if (v !== undefined) query.set(k, String(v));
    return (await this.call<{ runs: RunRecord[] }>("GET", pathOf(ROUTES.runs, {}, query))).runs;
  }

  async deleteRun(id: string): Promise<void> {
    await this.call("DELETE", pathOf(ROUTES.run, { id }));
  }

  async pruneRuns(scope: Scope | undefined, opts: RunPrune): Promise<string[]> {
    const body = { ...(scope ? { project: scope.project, domain: scope.domain } : {}), ...opts };
    return (await this.call<{ deleted: string[] }>("POST", ROUTES.runsPrune, body)).deleted;
  }

  readonly traces: TraceAccess = {
    list: (filter = {}) =>
      this.call(
        "GET",
        pathOf(
          ROUTES.traces,
          {},
          Object.fromEntries(
            Object.entries(filter).flatMap(([k, v]) => (v === undefined ? [] : [[k, String(v)]])),
          ),
        ),
      ),
    get: (traceId) => this.call("GET", pathOf(ROUTES.trace, { id: traceId })),
  };

  readonly tokens: TokenAccess = {
    create: async (name) =>
      (await this.call<{ token: NewToken }>("POST", ROUTES.tokens, name ? { name } : {})).token,
    list: async () => (await this.call<{ tokens: TokenInfo[] }>("GET", ROUTES.tokens)).tokens,
    revoke: async (idOrName) => {
      await this.call("DELETE", pathOf(ROUTES.token, { id: idOrName }));
    },
    link: async (scope, app) =>
      (
        await this.call<{ url: string }>("POST", ROUTES.loginLink, {
          scope: { project: scope.project, domain: scope.domain },
          name: app,
        })
      ).url,
    consoleLink: async () => (await this.call<{ url: string }>("POST", ROUTES.consoleLink, {})).url,
  };

  async *logs(scope: Scope, name: string, opts: LogsOptions = {}): AsyncIterable<string> {
    const query = new URLSearchParams({
      project: scope.project,
      domain: scope.domain,
      name,
      follow: String(!!opts.follow),
    });
    if (opts.tail !== undefined) query.set("tail", String(opts.tail));
    // A stream is not repeated: the server is checked first when it has not answered yet.
    if (this.recheck) await this.call("GET", ROUTES.health);
    const res = await fetch(`${this.url}${pathOf(ROUTES.logs, {}, query)}`, {
      headers: { authorization: `Bearer ${this.token}` },
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    if (!res.ok) {
      const json = (await res.json().catch(() => ({}))) as {
        error?: { code?: string; message?: string };
      };
      throw CaravanError.fromJSON(
        json.error ?? { message: `control plane answered ${res.status}` },
      );
    }
    const decoder = new TextDecoder();
    let partial = "";
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        const lines = (partial + decoder.decode(chunk, { stream: true })).split("\n");
        partial = lines.pop() ?? "";
        yield* lines;
      }
    } catch (e) {
      if (!opts.signal?.aborted) throw e;
    }
    if (partial) yield partial;
  }

  async close(): Promise<void> {}
}

const waitQuery = (waitMs?: number) => (waitMs ? { wait: String(waitMs) } : undefined);
