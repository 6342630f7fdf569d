/**
 * The backend conformance suite (test/conformance/suite.ts) against the kubernetes backend, on
 * the test cluster (or CARAVAN_K8S_CONTEXT's): each test in a project, so a namespace, of its
 * own; an app is made to fail with the test cluster's crash annotation on its pods.
 */
import { backendConformance } from "../conformance/suite.ts";
import { clusterAvailable, useKubeSandbox } from "./support.ts";

let kube: ReturnType<typeof useKubeSandbox>;
backendConformance({
  name: "kubernetes",
  skip: !clusterAvailable(),
  sandbox: () => (kube = useKubeSandbox()).sb,
  args: () => ["--backend", "kubernetes", "--project", kube.project()],
  failing: (app) => ({
    CONFORMANCE_FAIL: app,
    CONFORMANCE_FAIL_POD_ANNOTATIONS: JSON.stringify({ "caravan.test/crash": "true" }),
  }),
  timeoutMs: 180_000,
});
