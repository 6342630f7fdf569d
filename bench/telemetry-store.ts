/**
 * Where telemetry is written: `npx tsx bench/telemetry-store.ts [--batches N] [--rounds N]`.
 *
 * The receiver writes a batch of spans every 200 ms, on the control plane's event loop (the
 * gateway's too). Two ways, alternated in one run, same data:
 *   separate   `telemetry.db`, a file of its own (WAL, synchronous=OFF), as built
 *   state.db   the control plane's own database (`Store`: WAL, synchronous=NORMAL), the
 *              telemetry tables beside its state
 * Measured: the time one batch of 500 spans takes (the event loop is blocked that long), and
 * the time of a control-plane write (an event row, as `Store.event` writes) right after each
 * batch, which in the shared file also pays for the WAL the batch grew (checkpoints).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Database from "better-sqlite3";
import { Store } from "../src/backends/local/store.ts";
import { TelemetryStore } from "../src/backends/local/telemetry/store.ts";
import type { SpanRecord } from "../src/backends/local/telemetry/otlp.ts";

const args = process.argv.slice(2);
const num = (name: string, dflt: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : dflt;
};
const BATCHES = num("batches", 200);
const ROUNDS = num("rounds", 3);
const BATCH = 500;

let seq = 0;
function batch(): SpanRecord[] {
  const now = Date.now() * 1000;
  return Array.from({ length: BATCH }, () => {
    const n = seq++;
    return {
      traceId: n.toString(16).padStart(32, "0"),
      spanId: n.toString(16).padStart(16, "0"),
      parentSpanId: null,
      name: "GET /greeting/World",
      kind: 2,
      service: "app2-calls-app1",
      project: "default",
      domain: "development",
      startUs: now,
      endUs: now + 1500,
      status: 0,
      attributes: { "http.request.method": "GET", "http.response.status_code": 200 },
    };
  });
}

function percentile(xs: number[], p: number) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * p))]!;
}

function measure(kind: "separate" | "state.db") {
  const dir = mkdtempSync(join(tmpdir(), "caravan-bench-telemetry-"));
  try {
    const state = new Store(join(dir, "state.db"));
    const telemetry = new TelemetryStore(
      kind === "separate" ? join(dir, "telemetry.db") : join(dir, "state.db"),
    );
    if (kind === "state.db") {
      // The state's own durability, as it would be in one file.
      const db = (telemetry as unknown as { db: Database.Database }).db;
      db.pragma("synchronous = NORMAL");
    }
    const batchMs: number[] = [];
    const writeMs: number[] = [];
    for (let i = 0; i < BATCHES; i++) {
      const spans = batch();
      let t = performance.now();
      telemetry.write({ spans, logs: [], metrics: [] });
      batchMs.push(performance.now() - t);
      t = performance.now();
      state.event({ project: "default", domain: "development" }, "app1", "ready", "bench");
      writeMs.push(performance.now() - t);
    }
    telemetry.close();
    state.close();
    return {
      batchP50: percentile(batchMs, 0.5),
      batchP99: percentile(batchMs, 0.99),
      writeP50: percentile(writeMs, 0.5),
      writeP99: percentile(writeMs, 0.99),
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const results: Record<string, ReturnType<typeof measure>[]> = { separate: [], "state.db": [] };
for (let r = 0; r < ROUNDS; r++) {
  for (const kind of r % 2
    ? (["state.db", "separate"] as const)
    : (["separate", "state.db"] as const)) {
    const m = measure(kind);
    results[kind]!.push(m);
    console.log(
      `round ${r + 1} ${kind.padEnd(8)} batch of ${BATCH}: p50 ${m.batchP50.toFixed(2)} ms, p99 ${m.batchP99.toFixed(2)} ms; state write after it: p50 ${m.writeP50.toFixed(3)} ms, p99 ${m.writeP99.toFixed(3)} ms`,
    );
  }
}
const med = (xs: number[]) => percentile(xs, 0.5);
for (const kind of ["separate", "state.db"] as const) {
  const rs = results[kind]!;
  console.log(
    `median ${kind.padEnd(8)} batch p50 ${med(rs.map((r) => r.batchP50)).toFixed(2)} ms, p99 ${med(rs.map((r) => r.batchP99)).toFixed(2)} ms; state write p50 ${med(rs.map((r) => r.writeP50)).toFixed(3)} ms, p99 ${med(rs.map((r) => r.writeP99)).toFixed(3)} ms`,
  );
}
