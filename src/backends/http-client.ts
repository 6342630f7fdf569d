/** The backend contract over the daemon's HTTP API. */
import { CaravanError } from "../../errors.ts";
import type {
  Backend,
  DeployRequest,
  DeployResult,
  Endpoints,
  EnvironmentStatus,
  LogsOptions,
  RunFilter,
  RunRecord,
  RunRequest,
  Scope,
} from "../contract.ts";

export class HttpBackend implements Backend {
  constructor(
    private readonly url: string,
    private readonly token: string,
  ) {}

  /** A call to the daemon's API (also its local-only routes: tokens, login links, metrics). */
  async call<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${this.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          ...(body === undefined ? {} : { "content-type": "application/json" }),
        },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (e) {
      throw new CaravanError(
        "SERVER_UNREACHABLE",
        `cannot reach the control plane at ${this.url}: ${(e as Error).message}; check caravan server status`,
      );
    }
    const json = (await res.json().catch(() => ({}))) as {
      error?: { code?: string; message?: string };
    } & T;
    if (!res.ok)
      throw CaravanError.fromJSON(
        json.error ?? { code: "INTERNAL", message: `control plane answered ${res.status}` },
      );
    return json;
  }

  deploy(request: DeployRequest): Promise<DeployResult> {
    return this.call("POST", "/v1/deploy", request);
  }

  async status(scope?: Scope): Promise<EnvironmentStatus[]> {
    const query = scope
      ? `?${new URLSearchParams({ project: scope.project, domain: scope.domain })}`
      : "";
    return (await this.call<{ environments: EnvironmentStatus[] }>("GET", `/v1/status${query}`))
      .environments;
  }

  async stop(scope: Scope, names: string[], opts: { cascade?: boolean } = {}): Promise<string[]> {
    return (
      await this.call<{ done: string[] }>("POST", "/v1/stop", {
        scope,
        names,
        cascade: opts.cascade,
      })
    ).done;
  }

  async delete(scope: Scope, names: string[], opts: { cascade?: boolean } = {}): Promise<string[]> {
    return (
      await this.call<{ done: string[] }>("POST", "/v1/delete", {
        scope,
        names,
        cascade: opts.cascade,
      })
    ).done;
  }

  async reserve(scope: Scope, names: string[]): Promise<Record<string, Endpoints>> {
    return (
      await this.call<{ endpoints: Record<string, Endpoints> }>("POST", "/v1/reserve", {
        scope,
        names,
      })
    ).endpoints;
  }

  async prepare(request: DeployRequest): Promise<void> {
    await this.call("POST", "/v1/prepare", request);
  }

  async discard(scope: Scope, name: string): Promise<void> {
    await this.call("POST", "/v1/discard", { scope, name });
  }

  async startRun(request: RunRequest, opts: { waitMs?: number } = {}): Promise<RunRecord> {
    const query = opts.waitMs ? `?wait=${opts.waitMs}` : "";
    return (await this.call<{ run: RunRecord }>("POST", `/v1/runs${query}`, request)).run;
  }

  async getRun(id: string, opts: { waitMs?: number } = {}): Promise<RunRecord> {
    const query = opts.waitMs ? `?wait=${opts.waitMs}` : "";
    return (
      await this.call<{ run: RunRecord }>("GET", `/v1/runs/${encodeURIComponent(id)}${query}`)
    ).run;
  }

  async listRuns(scope: Scope | undefined, filter: RunFilter = {}): Promise<RunRecord[]> {
    const query = new URLSearchParams();
    if (scope) {
      query.set("project", scope.project);
      query.set("domain", scope.domain);
    }
    for (const [k, v] of Object.entries(filter)) if (v !== undefined) query.set(k, String(v));
    return (await this.call<{ runs: RunRecord[] }>("GET", `/v1/runs?${query}`)).runs;
  }

  async *logs(scope: Scope, name: string, opts: LogsOptions = {}): AsyncIterable<string> {
    const query = new URLSearchParams({
      project: scope.project,
      domain: scope.domain,
      name,
      follow: String(!!opts.follow),
    });
    if (opts.tail !== undefined) query.set("tail", String(opts.tail));
    const res = await fetch(`${this.url}/v1/logs?${query}`, {
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
