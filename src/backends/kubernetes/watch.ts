/**
 * One poll loop per namespace for every rollout waited on there: each tick lists the
 * namespace's caravan Deployments, pods and EndpointSlices once (three calls, however many
 * apps roll out at once) and hands the snapshot to each waiter. Polling with backoff, not a
 * watch: long watches are known to go silent in client libraries. A new waiter resets the
 * backoff, so a dependent's rollout is seen as fast as its dependency's was.
 */
import type { KubeClient } from "./client.ts";
import { LABELS, type KubeObject } from "./manifests.ts";
import type { DeploymentLike, EndpointSliceLike, PodLike } from "./rollout.ts";

const POLL_FIRST_MS = 100;
const POLL_MAX_MS = 1_000;

export type Deployment = KubeObject & DeploymentLike;
export type Pod = PodLike & { metadata: PodLike["metadata"] & { namespace?: string } };
type Slice = EndpointSliceLike & { metadata: KubeObject["metadata"] };

/** What one tick saw. */
export class Snapshot {
  constructor(
    private readonly deployments: Deployment[],
    private readonly podList: Pod[],
    private readonly sliceList: Slice[],
  ) {}

  deployment(name: string): Deployment | undefined {
    return this.deployments.find((d) => d.metadata.name === name);
  }

  /** The pods of an environment's revision. */
  pods(name: string, revision: string): Pod[] {
    return this.podList.filter(
      (p) =>
        p.metadata.labels?.[LABELS.environment] === name &&
        p.metadata.labels?.[LABELS.revision] === revision,
    );
  }

  /** The EndpointSlices of an app's Service. */
  slices(name: string): Slice[] {
    return this.sliceList.filter((s) => s.metadata.labels?.["kubernetes.io/service-name"] === name);
  }
}

/** Given each snapshot until it settles (resolves or rejects its own promise): true then. */
type Waiter = (snapshot: Snapshot) => Promise<boolean>;

/** Consecutive failed ticks before the waiters are told (a transient 5xx or timeout is retried). */
const TOLERATED_FAILURES = 5;

export class NamespaceWatch {
  /** `since`: the first tick that may answer (one that started after the waiter joined). */
  private readonly waiters = new Set<{
    visit: Waiter;
    fail: (e: unknown) => void;
    since: number;
  }>();
  /** Ticks started so far. */
  private ticks = 0;
  private delay = POLL_FIRST_MS;
  private looping = false;

  constructor(
    private readonly client: KubeClient,
    private readonly namespace: string,
    /** Selects caravan's objects of one project/domain. */
    private readonly selector: string,
  ) {}

  /** Resolves once `visit` returns true; rejects when it throws or polling fails. */
  until(visit: Waiter): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const waiter = {
        visit: async (s: Snapshot) => {
          if (!(await visit(s))) return false;
          resolve();
          return true;
        },
        fail: reject,
        // A tick already in flight listed before this rollout's writes: not an answer.
        since: this.ticks + 1,
      };
      this.waiters.add(waiter);
      this.delay = POLL_FIRST_MS;
      if (!this.looping) void this.loop();
    });
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      let failures = 0;
      while (this.waiters.size) {
        let snapshot: Snapshot;
        const tick = ++this.ticks;
        try {
          const [deployments, pods, slices] = await Promise.all([
            this.client.list<Deployment>("Deployment", this.namespace, this.selector),
            this.client.list<Pod>("Pod", this.namespace, this.selector),
            this.client.list<Slice>("EndpointSlice", this.namespace, this.selector),
          ]);
          snapshot = new Snapshot(deployments.items, pods.items, slices.items);
          failures = 0;
        } catch (e) {
          if (++failures >= TOLERATED_FAILURES) {
            for (const w of this.waiters) w.fail(e);
            this.waiters.clear();
            return;
          }
          await new Promise((r) => setTimeout(r, POLL_MAX_MS));
          continue;
        }
        await Promise.all(
          [...this.waiters].map(async (w) => {
            if (w.since > tick) return;
            try {
              if (await w.visit(snapshot)) this.waiters.delete(w);
            } catch (e) {
              this.waiters.delete(w);
              w.fail(e);
            }
          }),
        );
        if (!this.waiters.size) return;
        await new Promise((r) => setTimeout(r, this.delay));
        this.delay = Math.min(POLL_MAX_MS, Math.round(this.delay * 1.5));
      }
    } finally {
      this.looping = false;
    }
  }
}
