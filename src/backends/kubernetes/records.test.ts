import { describe, expect, test } from "vitest";
import type { DeployRequest } from "../contract.ts";
import { isUnchanged, recordOf } from "./records.ts";

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
});
