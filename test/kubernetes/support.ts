/**
 * Harness for the kubernetes backend's tests: each test gets a sandbox whose CLI runs with
 * `--backend kubernetes` against the test cluster (or the one CARAVAN_K8S_CONTEXT names), in a
 * project of its own (so a namespace of its own), deleted after the test. No local control
 * plane may start: the sandbox's clean-up fails a test that leaves a process behind.
 */
import { randomBytes } from "node:crypto";
import { afterEach, beforeAll, beforeEach, inject } from "vitest";
import type { KubeClient } from "../../src/backends/kubernetes/client.ts";
import { loadKubeClient } from "../../src/backends/kubernetes/kubeconfig.ts";
import { useSandbox, type Sandbox } from "../helpers.ts";

/** Whether a cluster is there to test against. */
export function clusterAvailable(): boolean {
  return Boolean(inject("kubeconfig") || process.env.CARAVAN_K8S_CONTEXT);
}

export interface KubeSandbox {
  sb: Sandbox;
  /** This test's project (its namespace is `<project>-development`). */
  project: () => string;
  namespace: () => string;
  /** A client for assertions (the same kubeconfig the CLI uses). */
  kube: () => KubeClient;
}

export function useKubeSandbox(): KubeSandbox {
  let project = "";
  let client: KubeClient | undefined;
  beforeAll(() => {
    const kubeconfig = inject("kubeconfig");
    if (kubeconfig) process.env.KUBECONFIG = kubeconfig;
  });
  const sb = useSandbox((s) => {
    s.env.CARAVAN_BACKEND = "kubernetes";
    if (process.env.KUBECONFIG) s.env.KUBECONFIG = process.env.KUBECONFIG;
  });
  beforeEach(() => {
    project = `t${randomBytes(4).toString("hex")}`;
  });
  afterEach(async () => {
    const k = client ?? loadKubeClient();
    await k.delete("Namespace", undefined, `${project}-development`).catch(() => false);
    k.close();
    client = undefined;
  });
  return {
    sb,
    project: () => project,
    namespace: () => `${project}-development`,
    kube: () => (client ??= loadKubeClient()),
  };
}

/** `--project <this test's project>`, for every CLI call. */
export const scoped = (k: KubeSandbox, ...args: string[]) => [...args, "--project", k.project()];
