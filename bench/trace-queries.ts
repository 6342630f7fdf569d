/**
 * What the console's telemetry reads cost the control plane: `npx tsx bench/trace-queries.ts
 * [--traces N] [--rounds N]`.
 *
 * The queries run on the control plane's event loop (the gateway's too), and an open traces
 * view or app panel repeats them every 2 s. A `telemetry.db` filled to the default retention
 * (100,000 spans: N traces of 5 spans over 3 apps, 1 % with an error; 100,000 metric points
 * and log records of one app), then each read, rotated within every round; medians over
 * rounds and the ratio to the anchor, `GET /v1/traces` without a filter as it was before
 * (the same SQL). "app filter, before" is the old app filter (spans of the app only), kept
 * here to compare with the new one (every span of the traces the app is in).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import type Database from "better-sqlite3";
import { TelemetryStore } from "../src/backends/local/telemetry/store.ts";
import type {
  LogRecordRow,
  MetricPointRow,
  SpanRecord,
} from "../src/backends/local/telemetry/otlp.ts";

const args = process.argv.slice(2);
const num = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const TRACES = num("traces", 20_000);
const ROUNDS = num("rounds", 15);
const APPS = ["gateway", "app2-calls-app1", "app1-is-called-by-app2"];
const scope = { project: "default", domain: "development" };

const dir = mkdtempSync(join(tmpdir(), "caravan-bench-trace-queries-"));
const store = new TelemetryStore(join(dir, "telemetry.db"));
try {
  const t0 = Date.now() * 1000 - TRACES * 1000;
  for (let from = 0; from < TRACES; from += 1000) {
    const spans: SpanRecord[] = [];
    const logs: LogRecordRow[] = [];
    const metrics: MetricPointRow[] = [];
    for (let n = from; n < Math.min(TRACES, from + 1000); n++) {
      const traceId = n.toString(16).padStart(32, "0");
      const start = t0 + n * 1000;
      for (let s = 0; s < 5; s++)
        spans.push({
          traceId,
          spanId: (n * 5 + s).toString(16).padStart(16, "0"),
          parentSpanId: s ? (n * 5 + s - 1).toString(16).padStart(16, "0") : null,
          name: "GET /greeting/World",
          kind: 2,
          service: APPS[s % 3]!,
          ...scope,
          startUs: start + s * 100,
          endUs: start + 1000 + (n % 50) * 100 - s * 100,
          status: s === 4 && n % 100 === 0 ? 2 : 0,
          attributes: { "http.response.status_code": 200 },
        });
      for (let k = 0; k < 5; k++) {
        logs.push({
          timeUs: start + k,
          traceId: k ? traceId : null,
          spanId: null,
          severityNumber: 9,
          severityText: "INFO",
          body: "greeted World",
          service: APPS[2]!,
          ...scope,
          attributes: {},
        });
        metrics.push({
          timeUs: start + k,
          name: `metric.${k}`,
          unit: "1",
          type: "gauge",
          value: n % 17,
          count: null,
          service: APPS[2]!,
          ...scope,
          attributes: {},
        });
      }
    }
    store.write({ spans, logs, metrics });
  }
  const db = (store as unknown as { db: Database.Database }).db;
  const before = (app?: string) =>
    db
      .prepare(
        `SELECT trace_id, MAX(start_us) AS latest FROM spans WHERE project = ? AND domain = ?
         ${app ? "AND service = ?" : ""} GROUP BY trace_id ORDER BY latest DESC LIMIT 100`,
      )
      .all(scope.project, scope.domain, ...(app ? [app] : [])).length;
  const app = APPS[2]!;
  const reads: [string, () => unknown][] = [
    ["list, no filter, before (anchor)", () => before()],
    ["list, no filter", () => store.listTraces({ ...scope, limit: 100 })],
    ["app filter, before", () => before(app)],
    ["app filter", () => store.listTraces({ ...scope, app, limit: 100 })],
    ["status=error", () => store.listTraces({ ...scope, status: "error", limit: 100 })],
    ["minDurationMs=5", () => store.listTraces({ ...scope, minDurationMs: 5, limit: 100 })],
    [
      "minDurationMs=3600000 (none match)",
      () => store.listTraces({ ...scope, minDurationMs: 3_600_000, limit: 100 }),
    ],
    ["one trace + its logs", () => [store.trace("1".padStart(32, "0")), store.logsOfTrace("1")]],
    ["log records of an app (200)", () => store.logRecords({ ...scope, app })],
    ["metrics of an app (5 × 300 points)", () => store.metrics({ ...scope, app, limit: 300 })],
  ];
  const times = new Map(reads.map(([name]) => [name, [] as number[]]));
  for (let round = 0; round < ROUNDS; round++)
    for (let i = 0; i < reads.length; i++) {
      const [name, read] = reads[(i + round) % reads.length]!;
      const t = performance.now();
      read();
      times.get(name)!.push(performance.now() - t);
    }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const anchor = median(times.get(reads[0]![0])!);
  console.log(
    `${cpus().length} × ${cpus()[0]?.model}, Node ${process.version}, load ${loadavg()
      .map((l) => l.toFixed(1))
      .join(" ")}; ${store.counts().spans} spans, ${ROUNDS} rounds`,
  );
  console.log("| read | median ms | × anchor |\n|---|---|---|");
  for (const [name] of reads) {
    const m = median(times.get(name)!);
    console.log(`| ${name} | ${m.toFixed(2)} | ×${(m / anchor).toFixed(2)} |`);
  }
} finally {
  store.close();
  rmSync(dir, { recursive: true, force: true });
}
