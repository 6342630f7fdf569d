import { describe, expect, test } from "vitest";
import { podFailure, rolloutState, type DeploymentLike, type PodLike } from "./rollout.ts";

const deployment = (
  status: DeploymentLike["status"],
  replicas = 2,
  generation = 3,
): DeploymentLike => ({
  metadata: { generation },
  spec: { replicas },
  status,
});
const done = { observedGeneration: 3, replicas: 2, updatedReplicas: 2, availableReplicas: 2 };
const readySlice = [{ endpoints: [{ conditions: { ready: true } }] }];
const pod = (containerStatus: object, extra: object = {}): PodLike => ({
  metadata: { name: "web-1" },
  status: { containerStatuses: [{ name: "app", ...containerStatus }], ...extra },
});

describe("kubectl's rollout rule", () => {
  test("ready: generation observed, updated = total = available = desired, a ready endpoint", () => {
    expect(rolloutState(deployment(done), [], readySlice)).toEqual({ state: "ready" });
  });

  test.each([
    ["the controller has not seen the new generation", { ...done, observedGeneration: 2 }],
    ["not every replica is updated", { ...done, updatedReplicas: 1 }],
    ["old replicas still terminating", { ...done, replicas: 3 }],
    ["updated replicas not available yet", { ...done, availableReplicas: 1 }],
  ])("progressing while %s", (_why, status) => {
    expect(rolloutState(deployment(status), [], readySlice).state).toBe("progressing");
  });

  test("progressing until the Service has a ready endpoint", () => {
    expect(rolloutState(deployment(done), [], []).state).toBe("progressing");
    expect(
      rolloutState(deployment(done), [], [{ endpoints: [{ conditions: { ready: false } }] }]).state,
    ).toBe("progressing");
  });

  test("a passed progress deadline is a failure", () => {
    const s = rolloutState(
      deployment({
        ...done,
        updatedReplicas: 1,
        conditions: [
          {
            type: "Progressing",
            status: "False",
            reason: "ProgressDeadlineExceeded",
            message: "timed out",
          },
        ],
      }),
      [],
      [],
    );
    expect(s).toMatchObject({ state: "failed", reason: "ProgressDeadlineExceeded" });
  });
});

describe("pod failures that waiting will not fix", () => {
  test("CrashLoopBackOff, with the exit code and restarts", () => {
    const p = pod({
      restartCount: 3,
      state: { waiting: { reason: "CrashLoopBackOff" } },
      lastState: { terminated: { exitCode: 1, reason: "Error" } },
    });
    expect(podFailure(p)).toEqual({
      reason: "CrashLoopBackOff",
      message: "container app exited with code 1, restarted 3 times",
    });
    expect(rolloutState(deployment(done), [p], readySlice)).toMatchObject({
      state: "failed",
      pod: "web-1",
    });
  });

  test("image pull, OOM and scheduling failures are named", () => {
    expect(
      podFailure(
        pod({ state: { waiting: { reason: "ImagePullBackOff", message: "no such image" } } }),
      )?.reason,
    ).toBe("ImagePullBackOff");
    expect(
      podFailure(
        pod({
          state: { waiting: { reason: "CrashLoopBackOff" } },
          lastState: { terminated: { exitCode: 137, reason: "OOMKilled" } },
        }),
      )?.reason,
    ).toBe("OOMKilled");
    const unschedulable = (since: string): PodLike => ({
      metadata: { name: "p" },
      status: {
        conditions: [
          {
            type: "PodScheduled",
            status: "False",
            reason: "Unschedulable",
            message: "0/1 nodes",
            lastTransitionTime: since,
          },
        ],
      },
    });
    const now = Date.parse("2026-01-01T00:00:30Z");
    // A pod may be placed a moment later: only one unschedulable for a while fails.
    expect(podFailure(unschedulable("2026-01-01T00:00:25Z"), now)).toBeUndefined();
    expect(podFailure(unschedulable("2026-01-01T00:00:10Z"), now)).toEqual({
      reason: "Unschedulable",
      message: "0/1 nodes",
    });
  });

  test("a container still starting is not a failure", () => {
    expect(
      podFailure(pod({ state: { waiting: { reason: "ContainerCreating" } } })),
    ).toBeUndefined();
  });
});
