/**
 * Per-app traffic figures: answers by status class, 5xx, a latency histogram fine enough for
 * quantiles, and their Prometheus text exposition.
 */

/** Latency histogram: 8 buckets per doubling from 10 µs (≈9% resolution), for quantiles. */
const FINE_PER_OCTAVE = 8;
const FINE_BASE_MS = 0.01;
const FINE_BUCKETS = 8 * 25; // 10 µs × 2^25 ≈ 93 h
/** Prometheus histogram bounds, in seconds. */
const PROM_BOUNDS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface AppStats {
  requests: number;
  /** 5xx answers, produced by the gateway or the app. */
  errors: number;
  /** Whole exchanges (arrival to last byte sent), in ms, since the app was opened. */
  latency: { p50: number; p99: number; count: number };
}

export class Histogram {
  readonly fine = new Float64Array(FINE_BUCKETS);
  readonly prom = new Float64Array(PROM_BOUNDS.length + 1);
  count = 0;
  sumSeconds = 0;

  record(ms: number): void {
    this.count++;
    const s = ms / 1000;
    this.sumSeconds += s;
    let i = ms <= FINE_BASE_MS ? 0 : Math.ceil(Math.log2(ms / FINE_BASE_MS) * FINE_PER_OCTAVE);
    if (i >= FINE_BUCKETS) i = FINE_BUCKETS - 1;
    this.fine[i]!++;
    let p = 0;
    while (p < PROM_BOUNDS.length && s > PROM_BOUNDS[p]!) p++;
    this.prom[p]!++;
  }

  /** The q-quantile in ms: the upper bound of the bucket holding it. */
  quantile(q: number): number {
    if (this.count === 0) return 0;
    const rank = Math.ceil(q * this.count);
    let seen = 0;
    for (let i = 0; i < FINE_BUCKETS; i++) {
      seen += this.fine[i]!;
      if (seen >= rank) return FINE_BASE_MS * 2 ** (i / FINE_PER_OCTAVE);
    }
    return FINE_BASE_MS * 2 ** (FINE_BUCKETS / FINE_PER_OCTAVE);
  }
}

/** One app's traffic since it was opened. */
export class Traffic {
  /** Answers by status class (index 1–5; 499 counts as 4xx). */
  readonly classes = [0, 0, 0, 0, 0, 0];
  requests = 0;
  errors = 0;
  readonly latency = new Histogram();

  /** `ms` < 0: counted, kept out of the latency histogram (upgrades, long-lived by nature). */
  record(status: number, ms: number): void {
    this.requests++;
    this.classes[(status / 100) | 0]!++;
    if (status >= 500) this.errors++;
    if (ms >= 0) this.latency.record(ms);
  }

  stats(): AppStats {
    const h = this.latency;
    return {
      requests: this.requests,
      errors: this.errors,
      latency: { p50: h.quantile(0.5), p99: h.quantile(0.99), count: h.count },
    };
  }
}

/** What the exposition shows of an app besides its traffic. */
export interface Gauges {
  app: string;
  traffic: Traffic;
  inFlight: number;
  waiting: number;
  replicas: number;
}

/** Prometheus text exposition: per app request counter (by status class), latency histogram, in-flight, waiting and replicas gauges. */
export function exposition(apps: Gauges[]): string {
  const lines: string[] = [];
  const family = (
    name: string,
    type: string,
    help: string,
    each: (g: Gauges, app: string) => void,
  ) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
    for (const g of apps) each(g, `app="${escapeLabel(g.app)}"`);
  };
  family(
    "caravan_gateway_requests_total",
    "counter",
    "Requests answered, by status class (499: the client went away first).",
    (g, app) => {
      for (let c = 1; c <= 5; c++) {
        lines.push(`caravan_gateway_requests_total{${app},code="${c}xx"} ${g.traffic.classes[c]}`);
      }
    },
  );
  family(
    "caravan_gateway_request_duration_seconds",
    "histogram",
    "Whole exchanges, from arrival to the last byte sent (upgrades excluded).",
    (g, app) => {
      const h = g.traffic.latency;
      let cumulative = 0;
      PROM_BOUNDS.forEach((le, i) => {
        cumulative += h.prom[i]!;
        lines.push(
          `caravan_gateway_request_duration_seconds_bucket{${app},le="${le}"} ${cumulative}`,
        );
      });
      lines.push(
        `caravan_gateway_request_duration_seconds_bucket{${app},le="+Inf"} ${h.count}`,
        `caravan_gateway_request_duration_seconds_sum{${app}} ${h.sumSeconds}`,
        `caravan_gateway_request_duration_seconds_count{${app}} ${h.count}`,
      );
    },
  );
  family("caravan_gateway_in_flight", "gauge", "Requests in flight on a replica.", (g, app) =>
    lines.push(`caravan_gateway_in_flight{${app}} ${g.inFlight}`),
  );
  family("caravan_gateway_waiting", "gauge", "Requests waiting for a replica.", (g, app) =>
    lines.push(`caravan_gateway_waiting{${app}} ${g.waiting}`),
  );
  family("caravan_gateway_replicas", "gauge", "Replicas taking requests.", (g, app) =>
    lines.push(`caravan_gateway_replicas{${app}} ${g.replicas}`),
  );
  return `${lines.join("\n")}\n`;
}

function escapeLabel(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}
