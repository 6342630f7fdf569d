/**
 * The gateway's workers each count their own share of every app's traffic; the primary adds
 * them up into what one gateway would have reported: load for the autoscaler, stats for
 * `status`, the Prometheus text. Histograms are added bucket by bucket, so quantiles of the
 * sum are exact to the histogram's resolution (quantiles themselves could not be added).
 */
import { Traffic, exposition, type AppLoad, type Gauges } from "../../gateway/index.ts";
import type { AppReport } from "./protocol.ts";

/** A `Traffic` as it crosses a process boundary (the fine histogram sparse: mostly zeros). */
export interface TrafficSnapshot {
  classes: number[];
  requests: number;
  errors: number;
  fine: [number, number][];
  prom: number[];
  count: number;
  sumSeconds: number;
}

/** One worker's view of one app. */
export interface WorkerApp {
  load: AppLoad;
  traffic: TrafficSnapshot;
  inFlight: number;
  waiting: number;
  replicas: number;
}

export function snapshot(t: Traffic): TrafficSnapshot {
  const fine: [number, number][] = [];
  t.latency.fine.forEach((n, i) => n && fine.push([i, n]));
  return {
    classes: [...t.classes],
    requests: t.requests,
    errors: t.errors,
    fine,
    prom: [...t.latency.prom],
    count: t.latency.count,
    sumSeconds: t.latency.sumSeconds,
  };
}

function addInto(t: Traffic, s: TrafficSnapshot): void {
  s.classes.forEach((n, i) => (t.classes[i] = (t.classes[i] ?? 0) + n));
  t.requests += s.requests;
  t.errors += s.errors;
  for (const [i, n] of s.fine) t.latency.fine[i]! += n;
  s.prom.forEach((n, i) => (t.latency.prom[i]! += n));
  t.latency.count += s.count;
  t.latency.sumSeconds += s.sumSeconds;
}

function addLoad(sum: AppLoad, l: AppLoad): void {
  for (const r of l.replicas) {
    const seen = sum.replicas.find((x) => x.id === r.id);
    if (seen) seen.inFlight += r.inFlight;
    else sum.replicas.push({ ...r });
  }
  sum.inFlight += l.inFlight;
  sum.waiting += l.waiting;
  sum.draining = Math.max(sum.draining, l.draining);
  sum.lastActiveAt = Math.max(sum.lastActiveAt, l.lastActiveAt);
}

/**
 * What the workers that exited had counted, per app. Their counters (requests, errors, status
 * classes, the latency histograms, sums and counts) stay in the sum, so that no total goes
 * backwards when a worker dies (Prometheus would take that for a reset); their gauges (in
 * flight, waiting, replicas, load) went with them.
 */
export type Retired = Map<string, Traffic>;

/** Adds an exiting worker's last figures to `retired`. */
export function retire(retired: Retired, latest: Record<string, WorkerApp>): void {
  for (const [app, a] of Object.entries(latest)) {
    let t = retired.get(app);
    if (!t) retired.set(app, (t = new Traffic()));
    addInto(t, a.traffic);
  }
}

/**
 * The apps in `apps` as one gateway: each worker's latest figures added up, plus the counters
 * of workers that exited (`retired`). An app no live worker has reported yet is left out.
 */
export function merge(
  workers: Record<string, WorkerApp>[],
  apps: Iterable<string>,
  retired: Retired = new Map(),
): { apps: Record<string, AppReport>; metrics: string } {
  const out: Record<string, AppReport> = {};
  const gauges: Gauges[] = [];
  for (const app of apps) {
    const traffic = new Traffic();
    const load: AppLoad = { replicas: [], inFlight: 0, waiting: 0, draining: 0, lastActiveAt: 0 };
    const g: Gauges = { app, traffic, inFlight: 0, waiting: 0, replicas: 0 };
    let seen = false;
    for (const w of workers) {
      const a = w[app];
      if (!a) continue;
      seen = true;
      addInto(traffic, a.traffic);
      addLoad(load, a.load);
      g.inFlight += a.inFlight;
      g.waiting += a.waiting;
      g.replicas = Math.max(g.replicas, a.replicas);
    }
    if (!seen) continue;
    const gone = retired.get(app);
    if (gone) addInto(traffic, snapshot(gone));
    out[app] = { load, stats: traffic.stats() };
    gauges.push(g);
  }
  return { apps: out, metrics: exposition(gauges) };
}
