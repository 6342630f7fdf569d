/**
 * Brings up the test Kubernetes control plane (scripts/kube-test-cluster: etcd,
 * kube-apiserver, controller-manager, scheduler and kwok on loopback) once for the whole run,
 * when the run includes the kubernetes tests, and stops it afterwards if this run started it.
 * A cluster given by CARAVAN_TEST_KUBECONFIG (or CARAVAN_K8S_CONTEXT) is used as it is.
 * The first `up` on a machine builds the binaries (minutes); later ones reuse the cache.
 */
import { execFileSync } from "node:child_process";
import { join } from "node:path";
import type { TestProject } from "vitest/node";

const SCRIPT = join(import.meta.dirname, "../../scripts/kube-test-cluster");

declare module "vitest" {
  export interface ProvidedContext {
    /** The kubeconfig of the cluster the kubernetes tests use ("" when there is none). */
    kubeconfig: string;
  }
}

/** True when this run's file filters (if any) select a kubernetes test file. */
function selected(): boolean {
  const args = process.argv.slice(2).filter((a) => !a.startsWith("-") && a !== "run");
  return args.length === 0 || args.some((a) => /kube|conformance|^test\/?$/.test(a));
}

export default function setup(project: TestProject) {
  const given = process.env.CARAVAN_TEST_KUBECONFIG ?? "";
  if (given || process.env.CARAVAN_K8S_CONTEXT || process.env.CARAVAN_SKIP_K8S || !selected()) {
    project.provide("kubeconfig", given);
    return;
  }
  const wasUp = (() => {
    try {
      execFileSync(SCRIPT, ["status"], { stdio: "ignore" });
      return true;
    } catch {
      return false;
    }
  })();
  const out = execFileSync(SCRIPT, ["up"], {
    encoding: "utf8",
    stdio: ["ignore", "pipe", "inherit"],
    timeout: 50 * 60_000,
  });
  const kubeconfig = out.trim().split("\n").at(-1)!;
  project.provide("kubeconfig", kubeconfig);
  return () => {
    if (!wasUp) execFileSync(SCRIPT, ["down"], { stdio: ["ignore", "ignore", "inherit"] });
  };
}
