/**
 * Starting a process of an environment: how it is launched (its environment, argv or runtime
 * config, secrets, run token), spawned (in a warm process when the pool has one) with its
 * log kept under the cap, and recorded in the store from the moment it exists, so no control
 * plane can orphan it.
 */
import { createHmac, timingSafeEqual } from "node:crypto";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Scope } from "../contract.ts";
import { OTLP_BASE } from "../http-routes.ts";
import { commandArgv, inputsDocument, launchEnvironment } from "../launch.ts";
import { API_TOKEN_ENV } from "../../runtime/protocol.ts";
import { logFile, type HomePaths } from "./home.ts";
import type { LogKeeper } from "./logs.ts";
import { SecretStore } from "./secrets.ts";
import type { EnvironmentRow, Store } from "./store.ts";
import { processEnv, spawnApp, type Launch, type LaunchSpec } from "./supervisor.ts";
import { WarmPool } from "./warm-pool.ts";

/** Where code in apps and task workers reaches the run API. */
export interface ApiAccess {
  url: string;
  secret: string;
}

export class Launcher {
  constructor(
    private readonly hooks: {
      paths: HomePaths;
      store: Store;
      warmPool: WarmPool;
      logKeeper: LogKeeper;
      /** Unset until the API listens. */
      apiAccess: () => ApiAccess | undefined;
      /** Once closed, the store is not written (it may be closed too). */
      closed: () => boolean;
    },
  ) {}

  /**
   * Spawns a process of `row` listening on `port` (0 for a task worker); `gate` holds its
   * start (two-phase start). It is recorded at once, and forgotten if it fails before ready.
   */
  start(row: EnvironmentRow, port: number, gate?: Promise<void>): Launch {
    const launch = this.spawnLogged(row, this.spec(row, port), gate);
    this.record(row, launch, port);
    return launch;
  }

  /** How to start a process of `row` listening on `port` (0 for a task worker). */
  spec(row: EnvironmentRow, port: number): LaunchSpec {
    const req = row.request;
    const spec = req.spec;
    const api = this.hooks.apiAccess();
    const env = launchEnvironment(req, {
      inputsFile: this.writeInputsFile(row),
      apiUrl: api?.url ?? "",
      // The receiver is on the API's port, under its own path (see http-routes.ts).
      ...(api
        ? {
            otlp: {
              endpoint: `${api.url}${OTLP_BASE}`,
              ...(port ? { replica: String(port) } : {}),
            },
          }
        : {}),
    });
    // Where a process listens: loopback only, behind the gateway (JS apps are told so in
    // their runtime config; a command app reads $HOST).
    env.HOST = "127.0.0.1";
    // Expansion in arguments sees everything but secrets and the run token (credentials: an
    // argv is visible to every user): both are added after.
    const argv = commandArgv(req, env, port);
    if (api) {
      env[API_TOKEN_ENV] = scopedRunToken(api.secret, row);
      // OTLP exporters authenticate with the same scoped token (the receiver takes it) — only
      // when they send to this receiver: an app that names its own collector never sends it
      // caravan's token.
      const receiver = `${api.url}${OTLP_BASE}`;
      if (
        env.OTEL_EXPORTER_OTLP_ENDPOINT === receiver &&
        !("OTEL_EXPORTER_OTLP_HEADERS" in spec.envVars) &&
        !("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT" in spec.envVars)
      )
        env.OTEL_EXPORTER_OTLP_HEADERS = `authorization=Bearer%20${env[API_TOKEN_ENV]}`;
    }
    // Secret values are read from the store at launch: never from the request or the store DB.
    if (spec.secrets.length) {
      const values = new SecretStore(this.hooks.paths.secrets).resolve(
        row,
        spec.secrets.map((s) => s.key),
        row.name,
      );
      for (const s of spec.secrets) env[s.envVar] = values[s.key]!;
    }
    const base = {
      name: row.name,
      port,
      logFile: logFile(this.hooks.paths, row.project, row.domain, row.name),
      startTimeoutMs: (spec.kind === "app" ? spec.timeouts.start : 60) * 1000,
      env,
    };
    // A command app or job runs its command; a JS app, task worker or function job the runtime.
    if (spec.kind !== "task" && argv.length) {
      return {
        ...base,
        mode: {
          kind: "command",
          argv,
          // With `include`, the command runs in its file snapshot.
          cwd: req.files && spec.include.length ? req.files.dir : req.code.sourceRoot,
          ...(spec.kind === "app" ? { readiness: spec.readiness } : {}),
        },
      };
    }
    return {
      ...base,
      mode: {
        kind: "runtime",
        runtimeMain: req.code.runtime,
        config: {
          kind: row.kind,
          name: row.name,
          project: row.project,
          domain: row.domain,
          // An app's own bundle, when it has one: its process evaluates no other app's module.
          entry: req.code.ownEntry ?? req.code.entry,
          sourceRoot: req.code.sourceRoot,
          port,
          host: "127.0.0.1",
          endpoints: Object.fromEntries(
            Object.entries(req.dependencies).map(([n, e]) => [n, e.internalEndpoint]),
          ),
          publicEndpoints: Object.fromEntries(
            Object.entries(req.dependencies).map(([n, e]) => [n, e.endpoint]),
          ),
          inputs: req.inputs,
        },
      },
    };
  }

  /**
   * `$CARAVAN_INPUTS_FILE` (see `inputsDocument`): one file per revision, which every replica
   * and restart shares.
   */
  private writeInputsFile(row: EnvironmentRow): string {
    const dir = join(this.hooks.paths.inputFiles, row.project, row.domain);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `${row.name}-${row.revision}.json`);
    if (existsSync(file)) return file;
    writeFileSync(file, JSON.stringify(inputsDocument(row.request), null, 2) + "\n");
    return file;
  }

  /**
   * Starts a process of `row` (in a warm one when the pool has one for it) and keeps its log
   * under the cap as it writes (see logs.ts).
   */
  private spawnLogged(row: EnvironmentRow, spec: LaunchSpec, gate?: Promise<void>): Launch {
    const warm =
      spec.mode.kind === "runtime" && WarmPool.allows(row.request, processEnv(spec))
        ? this.hooks.warmPool.take(spec.mode.runtimeMain)
        : undefined;
    const launch = spawnApp(spec, gate, warm);
    this.hooks.logKeeper.watch(spec.logFile);
    return launch;
  }

  /** Records a spawned process at once; forgets it when it exits before it was ready. */
  private record(row: EnvironmentRow, launch: Launch, port: number): void {
    const proc = launch.proc;
    if (!proc) return;
    this.hooks.store.addProcessOf(row, proc, port);
    launch.ready.catch(
      () => this.hooks.closed() || this.hooks.store.removeProcess(proc.pid, proc.startTime),
    );
  }

  /** Stops a process not (yet) serving, and forgets it. */
  async stop(launch: Launch): Promise<void> {
    const proc = launch.proc;
    if (!proc) return;
    await proc.stop(2000);
    if (!this.hooks.closed()) this.hooks.store.removeProcess(proc.pid, proc.startTime);
  }
}

/**
 * The token apps and task workers use for the run API: their scope, and an HMAC of it under
 * the control plane's own token. It allows runs in that scope only; no table to keep.
 */
export function scopedRunToken(secret: string, scope: Scope): string {
  const body = Buffer.from(JSON.stringify([scope.project, scope.domain])).toString("base64url");
  return `run_${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** The scope a run token is good for, or undefined when it is not one of ours. */
export function runTokenScope(secret: string, token: string): Scope | undefined {
  const m = /^run_([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)$/.exec(token);
  if (!m) return undefined;
  const expected = createHmac("sha256", secret).update(m[1]!).digest();
  const given = Buffer.from(m[2]!, "base64url");
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return undefined;
  const [project, domain] = JSON.parse(Buffer.from(m[1]!, "base64url").toString()) as string[];
  return { project: project!, domain: domain! };
}
