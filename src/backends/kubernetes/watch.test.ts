import { describe, expect, test } from "vitest";
import type { KubeClient } from "./client.ts";
import { NamespaceWatch } from "./watch.ts";

/** A client whose list calls wait until the test answers them, one tick at a time. */
function fakeClient() {
  const pending: ((items: object[]) => void)[] = [];
  let failNext = 0;
  const client = {
    list: (kind: string) =>
      new Promise((resolve, reject) => {
        if (failNext > 0) {
          failNext--;
          return reject(new Error("HTTP 503"));
        }
        pending.push((items) => resolve({ items: kind === "Deployment" ? items : [] }));
      }),
  } as unknown as KubeClient;
  /** Answers the tick in flight (its three list calls) with these Deployments. */
  const answer = async (deployments: object[]) => {
    while (pending.length < 3) await new Promise((r) => setTimeout(r, 1));
    for (const r of pending.splice(0, 3)) r(deployments);
  };
  return { client, answer, failNext: (n: number) => (failNext = n) };
}
const deployment = (name: string) => ({ metadata: { name } });

describe("the namespace's rollout poll loop", () => {
  test("a waiter that joins during a tick is not judged by that tick's (older) answer", async () => {
    const { client, answer } = fakeClient();
    const watch = new NamespaceWatch(client, "ns", "sel");
    const seenByB: string[][] = [];
    const a = watch.until(async (s) => Boolean(s.deployment("a")));
    // The first tick's lists are in flight; b is applied and starts waiting now.
    await new Promise((r) => setTimeout(r, 1));
    const b = watch.until(async (s) => {
      seenByB.push(["a", "b"].filter((n) => s.deployment(n)));
      return Boolean(s.deployment("b"));
    });
    await answer([deployment("a")]); // listed before b existed
    await a;
    expect(seenByB).toEqual([]);
    await answer([deployment("a"), deployment("b")]);
    await b;
    expect(seenByB).toEqual([["a", "b"]]);
  });

  test("a transient list failure is retried, not reported", async () => {
    const { client, answer, failNext } = fakeClient();
    failNext(3); // the three list calls of one tick
    const watch = new NamespaceWatch(client, "ns", "sel");
    const done = watch.until(async (s) => Boolean(s.deployment("a")));
    await answer([deployment("a")]);
    await expect(done).resolves.toBeUndefined();
  });
});
