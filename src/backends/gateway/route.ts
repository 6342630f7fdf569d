/**
 * One app behind the gateway: its listeners' ports, its replicas (ready and draining) with
 * least-outstanding-requests balancing, the requests waiting for a replica while it wakes,
 * and its traffic figures.
 */
import type { Server } from "node:http";
import type { Socket } from "node:net";
import { Traffic } from "./metrics.ts";
import type { RecordSpan, SpanBudget } from "./trace.ts";
import { Pool } from "./upstream.ts";

export interface RouteOptions {
  requiresAuth: boolean;
  /** Longest wait for the upstream response's headers, in ms; 0 = none. */
  requestTimeoutMs: number;
  /** `false`: the app's `tracing: false`: no span and no `traceparent` from the gateway. @default true */
  tracing?: boolean;
}

/** Starts an app with no ready replica (see `GatewayHooks.wake`). */
export type Wake = (app: string) => Promise<void>;

/** What a route takes of the gateway's hooks (`GatewayHooks`, which say what each does). */
export interface RouteHooks {
  wake?: Wake;
  /** Where the spans of its requests go (none: the gateway records none). */
  recordSpan?: RecordSpan;
  spanBudget?: SpanBudget;
}

export class ReplicaState {
  readonly pool: Pool;
  inFlight = 0;
  draining = false;
  /** Upgraded (WebSocket) connections, cut when a drain's grace runs out. */
  readonly upgrades = new Set<Socket>();
  onIdle?: () => void;
  drained?: Promise<void>;

  constructor(
    readonly id: string,
    readonly port: number,
    readonly host: string,
  ) {
    this.pool = new Pool(host, port);
  }

  /** Cuts everything: pooled and active connections, upgraded sockets. */
  destroy(): void {
    this.pool.destroy();
    for (const s of this.upgrades) s.destroy();
  }
}

/** A request or upgrade waiting for a replica. */
export interface Pending {
  dispatch(replica: ReplicaState): void;
  fail(status: number, message: string): void;
}

export class Route {
  options: RouteOptions;
  requested: { public: number; internal: number };
  servers: Server[] = [];
  /** Client connections on the fast path (node's server holds the others). */
  readonly clients = new Set<Socket>();
  /** Another process serves the listeners now: each connection closes after its response. */
  retiring = false;
  ports = { public: 0, internal: 0 };
  opening?: Promise<void>;
  /** Replicas taking new requests. */
  ready: ReplicaState[] = [];
  readonly drainingSet = new Set<ReplicaState>();
  rr = 0;
  inFlight = 0;
  queue: Pending[] = [];
  waking = false;
  lastActiveAt = Date.now();
  readonly traffic = new Traffic();
  private readonly wake: Wake | undefined;
  readonly recordSpan: RecordSpan | undefined;
  private readonly spanBudget: SpanBudget | undefined;

  constructor(
    readonly app: string,
    ports: { public: number; internal: number },
    options: RouteOptions,
    hooks: RouteHooks,
  ) {
    this.requested = { ...ports };
    this.options = { ...options };
    this.wake = hooks.wake;
    this.recordSpan = hooks.recordSpan;
    this.spanBudget = hooks.spanBudget;
  }

  /** Its requests take part in traces (see `trace.ts`). */
  get traced(): boolean {
    return this.recordSpan !== undefined && this.options.tracing !== false;
  }

  /** The request being read takes part in its trace: traced, and within the span budget. */
  traceNext(): boolean {
    return this.traced && (this.spanBudget === undefined || this.spanBudget.take());
  }

  /** A request whose head was made (`traceNext` asked) is not forwarded after all. */
  untrace(head: { trace?: unknown }): void {
    if (this.traced) this.spanBudget?.give(head.trace !== undefined);
  }

  /** Least outstanding requests; ties go round robin, starting after the last pick. */
  pick(exclude?: ReplicaState): ReplicaState | undefined {
    const list = this.ready;
    const n = list.length;
    if (n === 1) return list[0] === exclude ? undefined : list[0];
    let best: ReplicaState | undefined;
    let bestIndex = 0;
    const start = this.rr % n || 0;
    for (let k = 0; k < n; k++) {
      const i = start + k < n ? start + k : start + k - n;
      const r = list[i]!;
      if (r === exclude) continue;
      if (best === undefined || r.inFlight < best.inFlight) {
        best = r;
        bestIndex = i;
        if (r.inFlight === 0) break;
      }
    }
    this.rr = bestIndex + 1;
    return best;
  }

  acquire(replica: ReplicaState): void {
    replica.inFlight++;
    this.inFlight++;
  }

  release(replica: ReplicaState): void {
    replica.inFlight--;
    if (--this.inFlight === 0) this.lastActiveAt = Date.now();
    if (replica.inFlight === 0 && replica.onIdle) replica.onIdle();
  }

  /** Waits for a replica: starts the app (once for all waiting requests) through the wake hook. */
  enqueue(p: Pending): void {
    this.queue.push(p);
    if (this.waking) return;
    const wake = this.wake;
    if (!wake) {
      this.failQueue(503, `${this.app}: no replica is ready`);
      return;
    }
    this.waking = true;
    let woken: Promise<void>;
    try {
      woken = wake(this.app);
    } catch (err) {
      woken = Promise.reject(err);
    }
    woken.then(
      () => {
        this.waking = false;
        if (this.ready.length === 0) this.failQueue(503, `${this.app}: no replica is ready`);
      },
      (err: unknown) => {
        this.waking = false;
        const why = err instanceof Error ? err.message : String(err);
        this.failQueue(503, `${this.app}: could not start: ${why.split("\n")[0]}`);
      },
    );
  }

  dequeue(p: Pending): void {
    const i = this.queue.indexOf(p);
    if (i >= 0) this.queue.splice(i, 1);
  }

  flushQueue(): void {
    while (this.queue.length > 0) {
      const replica = this.pick();
      if (!replica) return;
      this.queue.shift()!.dispatch(replica);
    }
  }

  failQueue(status: number, message: string): void {
    const queue = this.queue;
    this.queue = [];
    for (const p of queue) p.fail(status, message);
  }
}
