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

export class NamespaceWatch {
  private readonly waiters = new Set<{ visit: Waiter; fail: (e: unknown) => void }>();
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
      };
      this.waiters.add(waiter);
      this.delay = POLL_FIRST_MS;
      if (!this.looping) void this.loop();
    });
  }

  private async loop(): Promise<void> {
    this.looping = true;
    try {
      while (this.waiters.size) {
        let snapshot: Snapshot;
        try {
          const [deployments, pods, slices] = await Promise.all([
            this.client.list<Deployment>("Deployment", this.namespace, this.selector),
            this.client.list<Pod>("Pod", this.namespace, this.selector),
            this.client.list<Slice>("EndpointSlice", this.namespace, this.selector),
          ]);
          snapshot = new Snapshot(deployments.items, pods.items, slices.items);
        } catch (e) {
          for (const w of this.waiters) w.fail(e);
          this.waiters.clear();
          return;
        }
        await Promise.all(
          [...this.waiters].map(async (w) => {
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
