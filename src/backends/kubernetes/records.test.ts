import { describe, expect, test } from "vitest";
import type { DeployRequest } from "../contract.ts";
import { isUnchanged, recordOf, taskStateOf } from "./records.ts";

const deployment = (status: object, annotations: Record<string, string> = {}) => ({
  apiVersion: "apps/v1",
  // Items of a list answer carry no kind: records must not rely on it.
  kind: undefined as unknown as string,
  metadata: {
    name: "web",
    namespace: "shop-dev",
    generation: 2,
    labels: {
      "caravan.dev/project": "shop",
      "caravan.dev/domain": "dev",
      "caravan.dev/environment": "web",
      "caravan.dev/kind": "app",
    },
    annotations: {
      "caravan.dev/revision": "r1",
      "caravan.dev/depends-on": '["api"]',
      "caravan.dev/desired": "running",
      ...annotations,
    },
  },
  spec: { replicas: 2 },
  status,
});
const done = { observedGeneration: 2, replicas: 2, updatedReplicas: 2, availableReplicas: 2 };
const req = { name: "web", kind: "app", revision: "r1" } as DeployRequest;

describe("what the cluster records", () => {
  test("an app from its labels and annotations, without the object's kind", () => {
    expect(recordOf(deployment(done))).toMatchObject({
      name: "web",
      kind: "app",
      revision: "r1",
      dependsOn: ["api"],
      desired: "running",
      scope: { project: "shop", domain: "dev" },
    });
    const foreign = deployment(done);
    delete (foreign.metadata.labels as Record<string, string>)["caravan.dev/kind"];
    expect(recordOf(foreign)).toBeUndefined();
  });

  test("unchanged only for the same revision, meant to run, fully rolled out", () => {
    expect(isUnchanged(recordOf(deployment(done))!, req)).toBe(true);
    expect(isUnchanged(recordOf(deployment(done))!, { ...req, revision: "r2" })).toBe(false);
    expect(isUnchanged(recordOf(deployment({ ...done, availableReplicas: 1 }))!, req)).toBe(false);
    expect(isUnchanged(recordOf(deployment({ ...done, observedGeneration: 1 }))!, req)).toBe(false);
    const stopped = deployment(done, { "caravan.dev/desired": "stopped" });
    expect(isUnchanged(recordOf(stopped)!, req)).toBe(false);
  });

  test("a task environment is unchanged and ready only once its revision registered its tasks", () => {
    const marker = (annotations: Record<string, string>) => ({
      apiVersion: "v1",
      kind: undefined as unknown as string,
      metadata: {
        name: "prep-tasks",
        namespace: "shop-dev",
        labels: {
          "caravan.dev/project": "shop",
          "caravan.dev/domain": "dev",
          "caravan.dev/environment": "prep",
          "caravan.dev/kind": "task",
        },
        annotations: { "caravan.dev/revision": "r1", ...annotations },
      },
    });
    const task = { name: "prep", kind: "task", revision: "r1" } as DeployRequest;
    const ready = recordOf(marker({ "caravan.dev/registration": "ready" }))!;
    expect(isUnchanged(ready, task)).toBe(true);
    expect(taskStateOf(ready)).toEqual({ state: "ready" });
    const failed = recordOf(
      marker({ "caravan.dev/registration": "failed", "caravan.dev/error": "MissingTask: x" }),
    )!;
    expect(isUnchanged(failed, task)).toBe(false);
    expect(taskStateOf(failed)).toEqual({ state: "failed", error: "MissingTask: x" });
    const pending = recordOf(marker({ "caravan.dev/registration": "pending" }))!;
    expect(isUnchanged(pending, task)).toBe(false);
    expect(taskStateOf(pending)).toEqual({ state: "starting" });
    // Written before registrations existed: it was ready then.
    expect(isUnchanged(recordOf(marker({}))!, task)).toBe(true);
    const stopped = recordOf(
      marker({ "caravan.dev/registration": "failed", "caravan.dev/desired": "stopped" }),
    )!;
    expect(taskStateOf(stopped)).toEqual({ state: "stopped" });
  });
});
