/**
 * Where the receiver keeps spans, log records and metric points: `$CARAVAN_HOME/telemetry.db`,
 * a SQLite file of its own. Telemetry is high-volume, disposable data; in a file apart, a
 * burst of it never grows the control plane's WAL or makes a state write wait for its
 * checkpoint, and deleting the file loses nothing that matters. Written in batches only
 * (the receiver's queue), bounded by count and age per project/domain after each batch (the
 * home's limits, or a project's own from its caravan.config).
 */
import Database from "better-sqlite3";
import type {
  LogRecordFilter,
  LogRecordView,
  MetricFilter,
  MetricSeries,
  Scope,
  SpanView,
  TraceFilter,
  TraceLogView,
  TraceSummary,
} from "../../contract.ts";
import type { LogRecordRow, MetricPointRow, SpanRecord } from "./otlp.ts";

/** Limits per project/domain. */
export interface TelemetryRetention {
  /** The newest this many spans are kept. @default 100000 */
  maxSpans: number;
  /** ... log records. @default 100000 */
  maxLogRecords: number;
  /** ... metric points. @default 100000 */
  maxMetricPoints: number;
  /** Nothing older than this (by its own time) is kept. @default 24 */
  maxAgeHours: number;
}

export const TELEMETRY_RETENTION: TelemetryRetention = {
  maxSpans: 100_000,
  maxLogRecords: 100_000,
  maxMetricPoints: 100_000,
  maxAgeHours: 24,
};

/**
 * The retention, from the daemon's environment: `CARAVAN_TELEMETRY_MAX_SPANS`,
 * `CARAVAN_TELEMETRY_MAX_LOG_RECORDS`, `CARAVAN_TELEMETRY_MAX_METRIC_POINTS`,
 * `CARAVAN_TELEMETRY_MAX_AGE_H` (a control plane serves every project of its home, so its
 * limits are the home's, not a project's config). Anything unset or invalid: the default.
 */
export function telemetryRetentionFrom(env: NodeJS.ProcessEnv): TelemetryRetention {
  const read = (name: string, fallback: number) => {
    const n = Number(env[name]);
    return env[name] && Number.isFinite(n) && n > 0 ? n : fallback;
  };
  const d = TELEMETRY_RETENTION;
  return {
    maxSpans: Math.floor(read("CARAVAN_TELEMETRY_MAX_SPANS", d.maxSpans)),
    maxLogRecords: Math.floor(read("CARAVAN_TELEMETRY_MAX_LOG_RECORDS", d.maxLogRecords)),
    maxMetricPoints: Math.floor(read("CARAVAN_TELEMETRY_MAX_METRIC_POINTS", d.maxMetricPoints)),
    maxAgeHours: read("CARAVAN_TELEMETRY_MAX_AGE_H", d.maxAgeHours),
  };
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS spans (
  trace_id TEXT NOT NULL, span_id TEXT NOT NULL, parent_id TEXT, name TEXT NOT NULL,
  kind INTEGER NOT NULL, service TEXT NOT NULL, project TEXT NOT NULL, domain TEXT NOT NULL,
  start_us INTEGER NOT NULL, end_us INTEGER NOT NULL, status INTEGER NOT NULL,
  status_message TEXT, attributes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS spans_by_trace ON spans (trace_id);
-- Retention, per project/domain: the oldest go first (by age, then beyond the count).
CREATE INDEX IF NOT EXISTS spans_by_scope ON spans (project, domain, start_us);
CREATE INDEX IF NOT EXISTS spans_by_service ON spans (service, start_us);
CREATE TABLE IF NOT EXISTS log_records (
  time_us INTEGER NOT NULL, trace_id TEXT, span_id TEXT, severity_number INTEGER NOT NULL,
  severity_text TEXT NOT NULL, body TEXT NOT NULL, service TEXT NOT NULL,
  project TEXT NOT NULL, domain TEXT NOT NULL, attributes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_records_by_scope ON log_records (project, domain, time_us);
CREATE INDEX IF NOT EXISTS log_records_by_trace ON log_records (trace_id) WHERE trace_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS metric_points (
  time_us INTEGER NOT NULL, name TEXT NOT NULL, unit TEXT NOT NULL, type TEXT NOT NULL,
  value REAL, count INTEGER, service TEXT NOT NULL, project TEXT NOT NULL, domain TEXT NOT NULL,
  attributes TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS metric_points_by_scope ON metric_points (project, domain, time_us);
CREATE INDEX IF NOT EXISTS metric_points_by_name ON metric_points (service, name, time_us);
-- A project/domain's own limits (caravan.config's telemetry), when it has some.
CREATE TABLE IF NOT EXISTS retention (
  project TEXT NOT NULL, domain TEXT NOT NULL, settings TEXT NOT NULL,
  PRIMARY KEY (project, domain)
);
`;

/** Table, its time column, and its count limit. */
const TABLES = [
  ["spans", "start_us", "maxSpans"],
  ["log_records", "time_us", "maxLogRecords"],
  ["metric_points", "time_us", "maxMetricPoints"],
] as const;
type Table = (typeof TABLES)[number][0];

const KINDS: SpanView["kind"][] = [
  "unspecified",
  "internal",
  "server",
  "client",
  "producer",
  "consumer",
];
const STATUSES: SpanView["status"][] = ["unset", "ok", "error"];

type Raw = Record<string, any>;

export class TelemetryStore {
  private readonly db: Database.Database;
  private readonly stmts;
  /** Rows per table and scope (see `counted`). */
  private readonly counts_ = new Map<string, { n: number }>();

  constructor(
    file: string,
    private readonly retention: TelemetryRetention = TELEMETRY_RETENTION,
  ) {
    this.db = new Database(file);
    this.db.pragma("journal_mode = WAL");
    // Telemetry may lose its last batch in a power cut; it never waits for a disk flush.
    this.db.pragma("synchronous = OFF");
    this.db.pragma("busy_timeout = 5000");
    this.db.exec(SCHEMA);
    const db = this.db;
    this.stmts = {
      span: db.prepare(`INSERT INTO spans VALUES (@traceId, @spanId, @parentSpanId, @name, @kind,
        @service, @project, @domain, @startUs, @endUs, @status, @statusMessage, @attributes)`),
      log: db.prepare(`INSERT INTO log_records VALUES (@timeUs, @traceId, @spanId, @severityNumber,
        @severityText, @body, @service, @project, @domain, @attributes)`),
      metric: db.prepare(`INSERT INTO metric_points VALUES (@timeUs, @name, @unit, @type, @value,
        @count, @service, @project, @domain, @attributes)`),
      trace: db.prepare("SELECT * FROM spans WHERE trace_id = ? ORDER BY start_us, rowid"),
      logsOfTrace: db.prepare(
        "SELECT * FROM log_records WHERE trace_id = ? ORDER BY time_us, rowid LIMIT 1000",
      ),
    };
  }

  /** Writes one batch in one transaction, then applies the retention to the scopes it touched. */
  write(batch: { spans: SpanRecord[]; logs: LogRecordRow[]; metrics: MetricPointRow[] }): void {
    const json = (attributes: Record<string, unknown>) => JSON.stringify(attributes);
    const nowMs = Date.now();
    const touched: [Table, { project: string; domain: string }[]][] = [
      ["spans", batch.spans],
      ["log_records", batch.logs],
      ["metric_points", batch.metrics],
    ];
    this.db.transaction(() => {
      // Rows added per table and scope; each scope's count is taken before the batch adds to it.
      const added = touched.map(([table, rows]) => {
        const perScope = new Map<string, { scope: Scope; n: number }>();
        for (const r of rows) {
          const key = `${r.project}/${r.domain}`;
          const entry = perScope.get(key) ?? {
            scope: { project: r.project, domain: r.domain },
            n: 0,
          };
          entry.n++;
          perScope.set(key, entry);
        }
        for (const { scope } of perScope.values()) this.counted(table, scope);
        return [table, perScope] as const;
      });
      for (const s of batch.spans)
        this.stmts.span.run({
          ...s,
          statusMessage: s.statusMessage ?? null,
          attributes: json(s.attributes),
        });
      for (const l of batch.logs) this.stmts.log.run({ ...l, attributes: json(l.attributes) });
      for (const m of batch.metrics)
        this.stmts.metric.run({ ...m, attributes: json(m.attributes) });
      for (const [table, perScope] of added)
        for (const { scope, n } of perScope.values()) {
          this.counted(table, scope).n += n;
          this.retain(table, scope, nowMs);
        }
    })();
  }

  /** A project/domain's limits (`undefined`: back to the defaults). */
  setRetention(scope: Scope, settings: Partial<TelemetryRetention> | undefined): void {
    if (settings && Object.keys(settings).length)
      this.db
        .prepare("INSERT OR REPLACE INTO retention (project, domain, settings) VALUES (?, ?, ?)")
        .run(scope.project, scope.domain, JSON.stringify(settings));
    else
      this.db
        .prepare("DELETE FROM retention WHERE project = ? AND domain = ?")
        .run(scope.project, scope.domain);
  }

  /** The limits that hold for a project/domain: its own, else the home's. */
  retentionOf(scope: Scope): TelemetryRetention {
    const row = this.db
      .prepare("SELECT settings FROM retention WHERE project = ? AND domain = ?")
      .get(scope.project, scope.domain) as Raw | undefined;
    return { ...this.retention, ...(row ? JSON.parse(row.settings) : {}) };
  }

  /** Keeps one scope's rows of a table within its age, then its count (oldest first). */
  retain(table: Table, scope: Scope, nowMs = Date.now()): void {
    const [, timeColumn, limitKey] = TABLES.find(([t]) => t === table)!;
    const limits = this.retentionOf(scope);
    const count = this.counted(table, scope);
    const cutoffUs = (nowMs - limits.maxAgeHours * 3_600_000) * 1000;
    count.n -= this.db
      .prepare(`DELETE FROM ${table} WHERE project = ? AND domain = ? AND ${timeColumn} < ?`)
      .run(scope.project, scope.domain, cutoffUs).changes;
    const excess = count.n - limits[limitKey];
    if (excess > 0)
      count.n -= this.db
        .prepare(
          `DELETE FROM ${table} WHERE rowid IN (SELECT rowid FROM ${table}
           WHERE project = ? AND domain = ? ORDER BY ${timeColumn} LIMIT ?)`,
        )
        .run(scope.project, scope.domain, excess).changes;
  }

  /** Applies the limits to every scope of every table (now and then, and after a change). */
  retainAll(nowMs = Date.now()): void {
    for (const [table] of TABLES) {
      const scopes = this.db
        .prepare(`SELECT DISTINCT project, domain FROM ${table}`)
        .all() as Scope[];
      for (const scope of scopes) this.retain(table, scope, nowMs);
    }
  }

  /**
   * Rows of a scope in a table, counted once (an index scan) and then kept up to date, so a
   * batch's count check costs nothing.
   */
  private counted(table: Table, scope: Scope): { n: number } {
    const key = `${table} ${scope.project}/${scope.domain}`;
    let count = this.counts_.get(key);
    if (!count) {
      const { n } = this.db
        .prepare(`SELECT COUNT(*) AS n FROM ${table} WHERE project = ? AND domain = ?`)
        .get(scope.project, scope.domain) as Raw;
      this.counts_.set(key, (count = { n }));
    }
    return count;
  }

  counts(): { spans: number; logRecords: number; metricPoints: number } {
    const count = (t: string) => (this.db.prepare(`SELECT COUNT(*) AS n FROM ${t}`).get() as Raw).n;
    return {
      spans: count("spans"),
      logRecords: count("log_records"),
      metricPoints: count("metric_points"),
    };
  }

  /**
   * The newest traces (by their latest span, or latest span of `app`), summed up over all
   * their spans. The console polls this every 2 s, on the event loop the gateway shares.
   */
  listTraces(filter: TraceFilter = {}): TraceSummary[] {
    const limit = Math.max(1, Math.min(1000, filter.limit ?? 50));
    const [where, params] = scopeConditions(filter);
    // A trace is an error when a span of it is, so without an app its error spans find it;
    // otherwise a status or a duration is known only over all of a trace's spans.
    const byErrorSpans = filter.status === "error" && !filter.app;
    if (filter.minDurationMs || (filter.status && !byErrorSpans))
      return this.tracesSummedUp(filter, limit);
    if (byErrorSpans) where.push("status = 2");
    // Spans newest first (an index), until the limit: what it shows, not what is kept.
    const newest = this.db.prepare(
      `SELECT trace_id FROM spans ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
       ORDER BY start_us DESC`,
    );
    const ids = new Set<string>();
    for (const { trace_id } of newest.iterate(...params) as Iterable<Raw>) {
      ids.add(trace_id);
      if (ids.size === limit) break;
    }
    return [...ids].map((id) => summaryOf(id, this.stmts.trace.all(id) as Raw[]));
  }

  /**
   * The newest traces whose status or length (over all their spans) passes the filter: every
   * kept span of the scope grouped by trace, a bounded cost (see bench/trace-queries.ts)
   * whether few or many pass.
   */
  private tracesSummedUp(filter: TraceFilter, limit: number): TraceSummary[] {
    const scoped = (
      [
        ["project", filter.project],
        ["domain", filter.domain],
      ] as const
    ).filter(([, v]) => v);
    const where = scoped.map(([column]) => `${column} = ?`);
    const params: unknown[] = scoped.map(([, v]) => v);
    if (filter.app) {
      where.push("trace_id IN (SELECT trace_id FROM spans WHERE service = ?)");
      params.push(filter.app);
    }
    const having: string[] = [];
    if (filter.status) having.push(`MAX(status = 2) = ${filter.status === "error" ? 1 : 0}`);
    if (filter.minDurationMs) {
      having.push("MAX(end_us) - MIN(start_us) >= ?");
      params.push(Math.round(filter.minDurationMs * 1000));
    }
    const ids = this.db
      .prepare(
        `SELECT trace_id, MAX(start_us) AS latest FROM spans
         ${where.length ? `WHERE ${where.join(" AND ")}` : ""}
         GROUP BY trace_id HAVING ${having.join(" AND ")} ORDER BY latest DESC LIMIT ?`,
      )
      .all(...params, limit) as Raw[];
    return ids.map(({ trace_id }) => summaryOf(trace_id, this.stmts.trace.all(trace_id) as Raw[]));
  }

  /** An app's newest OTLP log records (newest first), each with its trace id if it has one. */
  logRecords(filter: LogRecordFilter): LogRecordView[] {
    const [where, params] = appScope(filter);
    const rows = this.db
      .prepare(`SELECT * FROM log_records WHERE ${where} ORDER BY time_us DESC, rowid DESC LIMIT ?`)
      .all(...params, Math.max(1, Math.min(1000, filter.limit ?? 200))) as Raw[];
    return rows.map((r) => ({ ...logViewOf(r), traceId: r.trace_id }));
  }

  /**
   * An app's metrics (at most 50, by name), each with its newest points (oldest first):
   * what the console charts. Names come from the (service, name, time) index a seek at a
   * time, not from every point.
   */
  metrics(filter: MetricFilter): MetricSeries[] {
    const [where, params] = appScope(filter);
    const names = filter.name
      ? [filter.name]
      : (
          this.db
            .prepare(
              `WITH RECURSIVE names(name) AS (
                 SELECT MIN(name) FROM metric_points WHERE service = ?
                 UNION ALL
                 SELECT (SELECT MIN(name) FROM metric_points WHERE service = ? AND name > names.name)
                 FROM names WHERE names.name IS NOT NULL
               ) SELECT name FROM names WHERE name IS NOT NULL LIMIT 50`,
            )
            .all(filter.app, filter.app) as Raw[]
        ).map((r) => r.name as string);
    const limit = Math.max(1, Math.min(5000, filter.limit ?? 300));
    const points = this.db.prepare(
      `SELECT time_us, unit, type, value, count, attributes FROM metric_points
       WHERE ${where} AND name = ? ORDER BY time_us DESC LIMIT ?`,
    );
    return names.flatMap((name) => {
      const rows = (points.all(...params, name, limit) as Raw[]).reverse();
      // A name of the app in another project/domain only.
      if (!rows.length) return [];
      const newest = rows.at(-1)!;
      return [
        {
          name,
          unit: newest.unit,
          type: newest.type,
          points: rows.map((p) => ({
            timeMs: p.time_us / 1000,
            value: p.value,
            count: p.count,
            attributes: JSON.parse(p.attributes),
          })),
        },
      ];
    });
  }

  /** A trace's spans by start time, or undefined when none is kept. */
  trace(traceId: string): SpanView[] | undefined {
    const rows = this.stmts.trace.all(traceId.toLowerCase()) as Raw[];
    return rows.length ? rows.map(spanViewOf) : undefined;
  }

  /** The log records written within a trace (the console shows them beside it). */
  logsOfTrace(traceId: string): TraceLogView[] {
    return (this.stmts.logsOfTrace.all(traceId.toLowerCase()) as Raw[]).map(logViewOf);
  }

  close(): void {
    this.db.close();
  }
}

/** The conditions (and their parameters) on an app's and a scope's rows, those given. */
function scopeConditions(filter: {
  app?: string;
  project?: string;
  domain?: string;
}): [string[], unknown[]] {
  const conditions = (
    [
      ["service", filter.app],
      ["project", filter.project],
      ["domain", filter.domain],
    ] as const
  ).filter(([, v]) => v);
  return [conditions.map(([c]) => `${c} = ?`), conditions.map(([, v]) => v)];
}

/** The WHERE clause (and its parameters) of one app's rows, in a scope when given one. */
function appScope(filter: { app: string; project?: string; domain?: string }): [string, unknown[]] {
  const [conditions, params] = scopeConditions(filter);
  return [conditions.join(" AND "), params];
}

function logViewOf(r: Raw): TraceLogView {
  return {
    timeMs: r.time_us / 1000,
    app: r.service,
    spanId: r.span_id,
    severity: r.severity_text,
    body: r.body,
    attributes: JSON.parse(r.attributes),
  };
}

function summaryOf(traceId: string, rows: Raw[]): TraceSummary {
  const ids = new Set(rows.map((r) => r.span_id));
  // The root: the earliest span whose parent is not in the trace (rows are by start time).
  const root = rows.find((r) => !r.parent_id || !ids.has(r.parent_id)) ?? rows[0]!;
  const start = Math.min(...rows.map((r) => r.start_us));
  const end = Math.max(...rows.map((r) => r.end_us));
  return {
    traceId,
    root: root.name,
    apps: [...new Set(rows.map((r) => r.service as string))],
    spans: rows.length,
    startMs: start / 1000,
    durationMs: (end - start) / 1000,
    status: rows.some((r) => r.status === 2) ? "error" : "ok",
  };
}

function spanViewOf(r: Raw): SpanView {
  return {
    spanId: r.span_id,
    parentSpanId: r.parent_id,
    name: r.name,
    kind: KINDS[r.kind] ?? "unspecified",
    app: r.service,
    startMs: r.start_us / 1000,
    durationMs: (r.end_us - r.start_us) / 1000,
    status: STATUSES[r.status] ?? "unset",
    ...(r.status_message ? { statusMessage: r.status_message } : {}),
    attributes: JSON.parse(r.attributes),
  };
}
