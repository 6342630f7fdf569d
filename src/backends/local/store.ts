/**
 * The control plane's state in SQLite (WAL): what should run (environments, with everything
 * needed to start them again), what runs (processes), revisions and events. The daemon is
 * the only writer; a restarted daemon rebuilds everything from here.
 */
import Database from "better-sqlite3";
import type {
  DeployRequest,
  EnvironmentState,
  EnvironmentStatus,
  InstanceStatus,
  JobRun,
  RunFilter,
  RunRecord,
  Scope,
} from "../contract.ts";
import type { EnvironmentKind } from "../../sdk/environment.ts";
import { endpointsFor } from "./os.ts";

export interface EnvironmentRow {
  project: string;
  domain: string;
  name: string;
  kind: EnvironmentKind;
  revision: string;
  /** The last deploy request, so the environment can be started again without a client. */
  request: DeployRequest;
  /** From the ports table (not stored with the environment): null for task environments. */
  ports: AppPorts | null;
  state: EnvironmentState;
  desired: "running" | "stopped";
  restarts: number;
  error: string | null;
  updatedAt: string;
}

/** The gateway's two ports of an app: allocated once, kept until delete. */
export interface AppPorts {
  public: number;
  internal: number;
}

export interface ProcessRow {
  pid: number;
  /** Kernel start time of the process: a pid alone can be reused. */
  startTime: string;
  project: string;
  domain: string;
  name: string;
  revision: string;
  /** The port a replica listens on (0 for a task worker). */
  port: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS environments (
  project TEXT NOT NULL, domain TEXT NOT NULL, name TEXT NOT NULL,
  kind TEXT NOT NULL, revision TEXT NOT NULL, request TEXT NOT NULL,
  state TEXT NOT NULL, desired TEXT NOT NULL,
  restarts INTEGER NOT NULL DEFAULT 0, error TEXT, updated_at TEXT NOT NULL,
  PRIMARY KEY (project, domain, name)
);
-- An app's gateway ports (public and internal endpoints) are allocated once (reserved before
-- its first start) and kept until delete. Replicas listen on ports of their own (processes).
CREATE TABLE IF NOT EXISTS ports (
  project TEXT NOT NULL, domain TEXT NOT NULL, name TEXT NOT NULL,
  port INTEGER NOT NULL UNIQUE, internal_port INTEGER NOT NULL UNIQUE,
  PRIMARY KEY (project, domain, name)
);
CREATE TABLE IF NOT EXISTS processes (
  pid INTEGER NOT NULL, start_time TEXT NOT NULL,
  project TEXT NOT NULL, domain TEXT NOT NULL, name TEXT NOT NULL, revision TEXT NOT NULL,
  port INTEGER NOT NULL DEFAULT 0, started_at TEXT NOT NULL,
  PRIMARY KEY (pid, start_time)
);
CREATE TABLE IF NOT EXISTS revisions (
  project TEXT NOT NULL, domain TEXT NOT NULL, name TEXT NOT NULL, revision TEXT NOT NULL,
  spec TEXT NOT NULL, code_hash TEXT NOT NULL, created_at TEXT NOT NULL,
  PRIMARY KEY (project, domain, name, revision)
);
CREATE TABLE IF NOT EXISTS runs (
  id TEXT PRIMARY KEY, project TEXT NOT NULL, domain TEXT NOT NULL, environment TEXT NOT NULL,
  task TEXT NOT NULL, revision TEXT NOT NULL, status TEXT NOT NULL, args TEXT NOT NULL,
  output TEXT, error TEXT, attempts INTEGER NOT NULL DEFAULT 0, caller TEXT,
  created_at TEXT NOT NULL, started_at TEXT, finished_at TEXT, duration_ms INTEGER, logs TEXT,
  request_id TEXT
);
-- A client's idempotency key: the same request sent twice (after a lost answer) is one run.
CREATE UNIQUE INDEX IF NOT EXISTS runs_by_request ON runs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS runs_by_task ON runs (project, domain, task, status, created_at);
-- A run's output and logs, apart from its row: listing runs never reads them (SQLite would
-- walk a big value's overflow pages to reach the columns after it). bytes: their size.
CREATE TABLE IF NOT EXISTS run_outputs (
  id TEXT PRIMARY KEY, bytes INTEGER NOT NULL, output TEXT, logs TEXT
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- A job's runs: one row per attempt, kept while the job exists (the newest 50 of each).
CREATE TABLE IF NOT EXISTS job_runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  project TEXT NOT NULL, domain TEXT NOT NULL, name TEXT NOT NULL, revision TEXT NOT NULL,
  attempt INTEGER NOT NULL, status TEXT NOT NULL, exit_code INTEGER, error TEXT,
  started_at TEXT NOT NULL, finished_at TEXT, duration_ms INTEGER
);
CREATE INDEX IF NOT EXISTS job_runs_by_job ON job_runs (project, domain, name, id);
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
  project TEXT NOT NULL, domain TEXT NOT NULL, name TEXT NOT NULL, type TEXT NOT NULL, message TEXT
);
`;

type Raw = Record<string, any>;

/** A run's row with its output and logs (kept apart, in run_outputs). */
const RUN_WITH_OUTPUT =
  "SELECT r.*, o.output AS kept_output, o.logs AS kept_logs FROM runs r LEFT JOIN run_outputs o USING (id)";
/** Every column of a run but its output and logs. */
const LISTED_RUN_COLUMNS =
  "id, project, domain, environment, task, revision, status, args, error, attempts, caller, created_at, started_at, finished_at, duration_ms";

/**
 * Outputs and logs used to be columns of `runs` (kept, unused now): a database from then has
 * them moved into run_outputs, once.
 */
function moveRunOutputs(db: Database.Database): void {
  const old = db.prepare("SELECT 1 FROM runs WHERE output IS NOT NULL OR logs IS NOT NULL LIMIT 1");
  if (!old.get()) return;
  db.transaction(() => {
    db.exec(`INSERT OR REPLACE INTO run_outputs (id, bytes, output, logs)
      SELECT id, COALESCE(length(output), 0) + COALESCE(length(logs), 0), output, logs FROM runs
      WHERE output IS NOT NULL OR logs IS NOT NULL`);
    db.exec(
      "UPDATE runs SET output = NULL, logs = NULL WHERE output IS NOT NULL OR logs IS NOT NULL",
    );
  })();
}

const WITH_PORT =
  "SELECT e.*, p.port, p.internal_port FROM environments e LEFT JOIN ports p USING (project, domain, name)";

/** An event as the API lists it (`GET /v1/events`): ids grow, so `after` pages forward. */
export interface EventRecord {
  id: number;
  at: string;
  project: string;
  domain: string;
  name: string;
  type: string;
  message: string;
}

export class Store {
  private db: Database.Database;
  private stmts;
  /** Told after each write a live view shows (states, events, runs): see `onChange`. */
  private readonly watchers = new Set<() => void>();

  constructor(file: string) {
    this.db = new Database(file);
    this.db.pragma("journal_mode = WAL");
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("busy_timeout = 5000");
    this.db.exec(SCHEMA);
    moveRunOutputs(this.db);
    const db = this.db;
    this.stmts = {
      get: db.prepare(`${WITH_PORT} WHERE e.project = ? AND e.domain = ? AND e.name = ?`),
      list: db.prepare(`${WITH_PORT} WHERE e.project = ? AND e.domain = ? ORDER BY e.name`),
      listAll: db.prepare(`${WITH_PORT} ORDER BY e.project, e.domain, e.name`),
      upsert:
        db.prepare(`INSERT INTO environments (project, domain, name, kind, revision, request, state, desired, restarts, error, updated_at)
        VALUES (@project, @domain, @name, @kind, @revision, @request, @state, @desired, @restarts, @error, @updatedAt)
        ON CONFLICT (project, domain, name) DO UPDATE SET kind = excluded.kind, revision = excluded.revision,
          request = excluded.request, state = excluded.state, desired = excluded.desired,
          restarts = excluded.restarts, error = excluded.error, updated_at = excluded.updated_at`),
      setState: db.prepare(
        "UPDATE environments SET state = ?, error = ?, updated_at = ? WHERE project = ? AND domain = ? AND name = ?",
      ),
      setDesired: db.prepare(
        "UPDATE environments SET desired = ?, updated_at = ? WHERE project = ? AND domain = ? AND name = ?",
      ),
      bumpRestarts: db.prepare(
        "UPDATE environments SET restarts = restarts + 1 WHERE project = ? AND domain = ? AND name = ?",
      ),
      remove: db.prepare("DELETE FROM environments WHERE project = ? AND domain = ? AND name = ?"),
      ports: db.prepare(
        "SELECT port FROM ports UNION SELECT internal_port FROM ports UNION SELECT port FROM processes",
      ),
      portOf: db.prepare(
        "SELECT port, internal_port FROM ports WHERE project = ? AND domain = ? AND name = ?",
      ),
      assignPort: db.prepare(
        "INSERT INTO ports (project, domain, name, port, internal_port) VALUES (?, ?, ?, ?, ?)",
      ),
      releasePort: db.prepare("DELETE FROM ports WHERE project = ? AND domain = ? AND name = ?"),
      addProcess: db.prepare(
        "INSERT OR REPLACE INTO processes (pid, start_time, project, domain, name, revision, port, started_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
      ),
      removeProcess: db.prepare("DELETE FROM processes WHERE pid = ? AND start_time = ?"),
      // Oldest first: on adoption, the serving process wins over a newer one still loading.
      allProcesses: db.prepare("SELECT * FROM processes ORDER BY started_at, rowid"),
      addRevision: db.prepare(
        "INSERT OR IGNORE INTO revisions (project, domain, name, revision, spec, code_hash, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
      ),
      addEvent: db.prepare(
        "INSERT INTO events (at, project, domain, name, type, message) VALUES (?, ?, ?, ?, ?, ?)",
      ),
      revisionsOf: db.prepare(
        "SELECT revision, created_at FROM revisions WHERE project = ? AND domain = ? AND name = ? ORDER BY created_at DESC, rowid DESC LIMIT ?",
      ),
      events: db.prepare(
        "SELECT * FROM (SELECT * FROM events WHERE project = ? AND domain = ? AND id > ? ORDER BY id DESC LIMIT ?) ORDER BY id",
      ),
      insertRun: db.prepare(
        `INSERT INTO runs (id, project, domain, environment, task, revision, status, args, attempts, caller, created_at, request_id)
        VALUES (@id, @project, @domain, @environment, @task, @revision, @status, @args, @attempts, @caller, @createdAt, @requestId)`,
      ),
      runByRequest: db.prepare(`${RUN_WITH_OUTPUT} WHERE r.request_id = ?`),
      updateRun: db.prepare(
        `UPDATE runs SET status = @status, error = @error, attempts = @attempts,
        started_at = @startedAt, finished_at = @finishedAt, duration_ms = @durationMs WHERE id = @id`,
      ),
      setRunOutput: db.prepare(
        `INSERT INTO run_outputs (id, bytes, output, logs) VALUES (@id, @bytes, @output, @logs)
        ON CONFLICT (id) DO UPDATE SET bytes = excluded.bytes, output = excluded.output, logs = excluded.logs`,
      ),
      getRun: db.prepare(`${RUN_WITH_OUTPUT} WHERE r.id = ?`),
      unfinishedRuns: db.prepare(`${RUN_WITH_OUTPUT} WHERE r.status IN ('queued', 'running')`),
      deleteRun: db.prepare("DELETE FROM runs WHERE id = ?"),
      deleteRunOutput: db.prepare("DELETE FROM run_outputs WHERE id = ?"),
      getMeta: db.prepare("SELECT value FROM meta WHERE key = ?"),
      setMeta: db.prepare(
        "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
      ),
    };
  }

  /** The open database, for stores of other concerns that keep their own tables in it. */
  get database(): Database.Database {
    return this.db;
  }

  close(): void {
    this.db.close();
  }

  get(scope: Scope, name: string): EnvironmentRow | undefined {
    const raw = this.stmts.get.get(scope.project, scope.domain, name) as Raw | undefined;
    return raw && toRow(raw);
  }

  list(scope?: Scope): EnvironmentRow[] {
    const raws = (
      scope ? this.stmts.list.all(scope.project, scope.domain) : this.stmts.listAll.all()
    ) as Raw[];
    return raws.map(toRow);
  }

  /**
   * Calls `fn` after every change of an environment's state, an event or a run (the console's
   * live stream pushes them instead of polling); returns the unsubscribe.
   */
  onChange(fn: () => void): () => void {
    this.watchers.add(fn);
    return () => this.watchers.delete(fn);
  }

  private changed(): void {
    for (const fn of this.watchers) fn();
  }

  /** Saves everything but the ports, which `assignPorts` owns. */
  upsert(row: EnvironmentRow): void {
    const { ports: _ports, ...fields } = row;
    this.stmts.upsert.run({ ...fields, request: JSON.stringify(row.request) });
    this.changed();
  }

  setState(scope: Scope, name: string, state: EnvironmentState, error: string | null = null): void {
    this.stmts.setState.run(state, error, now(), scope.project, scope.domain, name);
    this.changed();
  }

  setDesired(scope: Scope, name: string, desired: "running" | "stopped"): void {
    this.stmts.setDesired.run(desired, now(), scope.project, scope.domain, name);
    this.changed();
  }

  bumpRestarts(scope: Scope, name: string): void {
    this.stmts.bumpRestarts.run(scope.project, scope.domain, name);
    this.changed();
  }

  remove(scope: Scope, name: string): void {
    this.stmts.remove.run(scope.project, scope.domain, name);
    this.changed();
    this.db
      .prepare("DELETE FROM job_runs WHERE project = ? AND domain = ? AND name = ?")
      .run(scope.project, scope.domain, name);
  }

  /** Records the start of a job's attempt; returns its id for `finishJobRun`. */
  startJobRun(scope: Scope, name: string, revision: string, attempt: number): number {
    const r = this.db
      .prepare(
        "INSERT INTO job_runs (project, domain, name, revision, attempt, status, started_at) VALUES (?, ?, ?, ?, ?, 'running', ?)",
      )
      .run(scope.project, scope.domain, name, revision, attempt, now());
    this.db
      .prepare(
        "DELETE FROM job_runs WHERE project = ? AND domain = ? AND name = ? AND id <= (SELECT id FROM job_runs WHERE project = ? AND domain = ? AND name = ? ORDER BY id DESC LIMIT 1 OFFSET 50)",
      )
      .run(scope.project, scope.domain, name, scope.project, scope.domain, name);
    return Number(r.lastInsertRowid);
  }

  finishJobRun(
    id: number,
    outcome: { status: "succeeded" | "failed"; exitCode: number | null; error?: string },
  ): void {
    this.db
      .prepare(
        "UPDATE job_runs SET status = ?, exit_code = ?, error = ?, finished_at = ?, duration_ms = CAST((julianday(?) - julianday(started_at)) * 86400000 AS INTEGER) WHERE id = ?",
      )
      .run(outcome.status, outcome.exitCode, outcome.error ?? null, now(), now(), id);
  }

  /** Attempts still marked running (their control plane died): they failed. */
  interruptJobRuns(): void {
    this.db
      .prepare(
        "UPDATE job_runs SET status = 'failed', error = 'interrupted: the control plane stopped while it ran', finished_at = ? WHERE status = 'running'",
      )
      .run(now());
  }

  /** A job's runs, newest first. */
  jobRuns(scope: Scope, name: string, limit = 5): JobRun[] {
    return (
      this.db
        .prepare(
          "SELECT * FROM job_runs WHERE project = ? AND domain = ? AND name = ? ORDER BY id DESC LIMIT ?",
        )
        .all(scope.project, scope.domain, name, limit) as Raw[]
    ).map((r) => ({
      revision: r.revision,
      attempt: r.attempt,
      status: r.status,
      ...(r.exit_code !== null || r.status === "failed" ? { exitCode: r.exit_code } : {}),
      ...(r.error ? { error: r.error } : {}),
      startedAt: r.started_at,
      ...(r.finished_at ? { finishedAt: r.finished_at } : {}),
      ...(r.duration_ms !== null ? { durationMs: r.duration_ms } : {}),
    }));
  }

  portsOf(scope: Scope, name: string): AppPorts | undefined {
    const raw = this.stmts.portOf.get(scope.project, scope.domain, name) as Raw | undefined;
    return raw && { public: raw.port, internal: raw.internal_port };
  }

  assignPorts(scope: Scope, name: string, ports: AppPorts): void {
    this.stmts.assignPort.run(scope.project, scope.domain, name, ports.public, ports.internal);
  }

  releasePort(scope: Scope, name: string): void {
    this.stmts.releasePort.run(scope.project, scope.domain, name);
  }

  usedPorts(): Set<number> {
    return new Set((this.stmts.ports.all() as Raw[]).map((r) => r.port as number));
  }

  addProcess(p: ProcessRow): void {
    this.stmts.addProcess.run(
      p.pid,
      p.startTime,
      p.project,
      p.domain,
      p.name,
      p.revision,
      p.port,
      now(),
    );
  }

  /** Records a process of `row`'s revision the moment it is spawned. */
  addProcessOf(row: EnvironmentRow, proc: { pid: number; startTime: string }, port: number): void {
    this.addProcess({
      pid: proc.pid,
      startTime: proc.startTime,
      project: row.project,
      domain: row.domain,
      name: row.name,
      revision: row.revision,
      port,
    });
  }

  removeProcess(pid: number, startTime: string): void {
    this.stmts.removeProcess.run(pid, startTime);
  }

  allProcesses(): ProcessRow[] {
    return (this.stmts.allProcesses.all() as Raw[]).map(toProcess);
  }

  addRevision(scope: Scope, name: string, revision: string, spec: unknown, codeHash: string): void {
    this.stmts.addRevision.run(
      scope.project,
      scope.domain,
      name,
      revision,
      JSON.stringify(spec),
      codeHash,
      now(),
    );
  }

  event(scope: Scope, name: string, type: string, message = ""): void {
    this.stmts.addEvent.run(now(), scope.project, scope.domain, name, type, message);
    this.changed();
  }

  /** An environment's revisions, newest first: when each was first deployed. */
  revisions(scope: Scope, name: string, limit = 20): { revision: string; deployedAt: string }[] {
    return (this.stmts.revisionsOf.all(scope.project, scope.domain, name, limit) as Raw[]).map(
      (r) => ({ revision: r.revision, deployedAt: r.created_at }),
    );
  }

  /** A scope's events after the id `after` (0: from the start), the newest `limit`, oldest first. */
  events(scope: Scope, after = 0, limit = 200): EventRecord[] {
    return (this.stmts.events.all(scope.project, scope.domain, after, limit) as Raw[]).map(
      (r) => ({ ...r, message: r.message ?? "" }) as EventRecord,
    );
  }

  /**
   * The health each environment was last recorded in (its newest `degraded` or `healthy`
   * event), degraded ones only: a healthy one needs no closing event.
   */
  lastHealth(): Map<string, { state: "degraded"; reason: string }> {
    const rows = this.db
      .prepare(
        `SELECT e.project, e.domain, e.name, e.message FROM events e JOIN (
           SELECT MAX(id) AS id FROM events WHERE type IN ('degraded', 'healthy')
           GROUP BY project, domain, name) last USING (id)
         WHERE e.type = 'degraded'`,
      )
      .all() as Raw[];
    return new Map(
      rows.map((r) => [
        keyOf(r as Scope, r.name),
        { state: "degraded" as const, reason: r.message ?? "" },
      ]),
    );
  }

  getMeta(key: string): string | undefined {
    return (this.stmts.getMeta.get(key) as Raw | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.stmts.setMeta.run(key, value);
  }

  insertRun(run: RunRecord, requestId?: string): void {
    this.stmts.insertRun.run({
      ...run,
      args: JSON.stringify(run.args),
      caller: run.caller ?? null,
      requestId: requestId ?? null,
    });
    this.changed();
  }

  /** The run a client's request created, by its idempotency key. */
  runByRequest(requestId: string): RunRecord | undefined {
    const raw = this.stmts.runByRequest.get(requestId) as Raw | undefined;
    return raw && toRun(raw);
  }

  /** Saves a run's progress (everything that changes after it was created). */
  updateRun(run: RunRecord): void {
    this.stmts.updateRun.run({
      id: run.id,
      status: run.status,
      error: run.error ? JSON.stringify(run.error) : null,
      attempts: run.attempts,
      startedAt: run.startedAt ?? null,
      finishedAt: run.finishedAt ?? null,
      durationMs: run.durationMs ?? null,
    });
    if (run.output !== undefined || run.logs !== undefined) {
      const output = run.output === undefined ? null : JSON.stringify(run.output);
      const logs = run.logs ?? null;
      this.stmts.setRunOutput.run({
        id: run.id,
        bytes: (output?.length ?? 0) + (logs?.length ?? 0),
        output,
        logs,
      });
    }
    this.changed();
  }

  /** Forgets a run (its output and logs too); false when there was none. */
  deleteRun(id: string): boolean {
    return this.db.transaction(() => {
      this.stmts.deleteRunOutput.run(id);
      return this.stmts.deleteRun.run(id).changes > 0;
    })();
  }

  /**
   * Deletes finished runs (never one queued or running): those created before `before` (ISO
   * 8601), those beyond the newest `keep` of their project/domain, and the oldest ones of a
   * project/domain whose newer runs' outputs and logs already add up to `maxBytes`. Only in
   * `scope` when given. Returns the ids deleted.
   */
  pruneRuns(
    scope: Scope | undefined,
    policy: { before?: string; keep?: number; maxBytes?: number },
  ): string[] {
    const where = scope ? "AND r.project = @project AND r.domain = @domain" : "";
    const ids = (
      this.db
        .prepare(
          `SELECT id FROM (
            SELECT r.id, r.created_at,
              ROW_NUMBER() OVER w AS n,
              SUM(COALESCE(o.bytes, 0)) OVER w AS total
            FROM runs r LEFT JOIN run_outputs o USING (id)
            WHERE r.status IN ('succeeded', 'failed') ${where}
            WINDOW w AS (PARTITION BY r.project, r.domain ORDER BY r.created_at DESC, r.rowid DESC)
          ) WHERE created_at < @before OR n > @keep OR total > @maxBytes`,
        )
        .all({
          before: policy.before ?? "",
          keep: policy.keep ?? Number.MAX_SAFE_INTEGER,
          maxBytes: policy.maxBytes ?? Number.MAX_SAFE_INTEGER,
          ...(scope ? { project: scope.project, domain: scope.domain } : {}),
        }) as { id: string }[]
    ).map((r) => r.id);
    this.db.transaction(() => {
      for (const id of ids) {
        this.stmts.deleteRunOutput.run(id);
        this.stmts.deleteRun.run(id);
      }
    })();
    return ids;
  }

  getRun(id: string): RunRecord | undefined {
    const raw = this.stmts.getRun.get(id) as Raw | undefined;
    return raw && toRun(raw);
  }

  /** Newest first, without their outputs and logs (`getRun` has them). */
  listRuns(scope: Scope | undefined, filter: RunFilter = {}): RunRecord[] {
    const where: string[] = [];
    const params: unknown[] = [];
    if (scope) {
      where.push("project = ? AND domain = ?");
      params.push(scope.project, scope.domain);
    }
    if (filter.task) {
      where.push("task = ?");
      params.push(filter.task);
    }
    if (filter.status) {
      where.push("status = ?");
      params.push(filter.status);
    }
    const sql = `SELECT ${LISTED_RUN_COLUMNS} FROM runs ${where.length ? `WHERE ${where.join(" AND ")}` : ""} ORDER BY created_at DESC, rowid DESC LIMIT ?`;
    params.push(filter.limit ?? 100);
    return (this.db.prepare(sql).all(...params) as Raw[]).map(toRun);
  }

  unfinishedRuns(): RunRecord[] {
    return (this.stmts.unfinishedRuns.all() as Raw[]).map(toRun);
  }

  /** The status of `row`, whose live processes are `instances`. */
  toStatus(row: EnvironmentRow, instances: InstanceStatus[]): EnvironmentStatus {
    const status: EnvironmentStatus = {
      project: row.project,
      domain: row.domain,
      name: row.name,
      kind: row.kind,
      state: row.state,
      revision: row.revision,
      restarts: row.restarts,
      pids: instances.flatMap((i) => (i.pid === undefined ? [] : [i.pid])),
      instances,
      dependsOn: row.request.spec.dependsOn,
      updatedAt: row.updatedAt,
    };
    if (row.ports !== null) Object.assign(status, endpointsFor(row.ports));
    if (row.error) status.error = row.error;
    return status;
  }
}

/** The in-memory key of an environment: `project/domain/name`. */
export const keyOf = (scope: Scope, name: string) => `${scope.project}/${scope.domain}/${name}`;

export function now(): string {
  return new Date().toISOString();
}

function toRow(r: Raw): EnvironmentRow {
  return {
    project: r.project,
    domain: r.domain,
    name: r.name,
    kind: r.kind,
    revision: r.revision,
    request: JSON.parse(r.request),
    ports: r.port == null ? null : { public: r.port, internal: r.internal_port },
    state: r.state,
    desired: r.desired,
    restarts: r.restarts,
    error: r.error,
    updatedAt: r.updated_at,
  };
}

function toProcess(r: Raw): ProcessRow {
  return {
    pid: r.pid,
    startTime: r.start_time,
    project: r.project,
    domain: r.domain,
    name: r.name,
    revision: r.revision,
    port: r.port ?? 0,
  };
}

function toRun(r: Raw): RunRecord {
  const run: RunRecord = {
    id: r.id,
    project: r.project,
    domain: r.domain,
    environment: r.environment,
    task: r.task,
    revision: r.revision,
    status: r.status,
    args: JSON.parse(r.args),
    attempts: r.attempts,
    createdAt: r.created_at,
  };
  const output = r.kept_output ?? r.output;
  const logs = r.kept_logs ?? r.logs;
  if (output != null) run.output = JSON.parse(output);
  if (r.error != null) run.error = JSON.parse(r.error);
  if (r.caller != null) run.caller = r.caller;
  if (r.started_at != null) run.startedAt = r.started_at;
  if (r.finished_at != null) run.finishedAt = r.finished_at;
  if (r.duration_ms != null) run.durationMs = r.duration_ms;
  if (logs != null) run.logs = logs;
  return run;
}
