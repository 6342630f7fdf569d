/**
 * The backend conformance suite (test/conformance/suite.ts) against the local backend: each
 * test in a sandbox of its own (a fresh CARAVAN_HOME, so a control plane of its own), the
 * backend selected with --backend local.
 */
import { backendConformance } from "./conformance/suite.ts";
import { useSandbox } from "./helpers.ts";

backendConformance({
  name: "local",
  sandbox: () => useSandbox(),
  args: () => ["--backend", "local"],
  // The failing app's process exits at start-up: a local deploy fails at once.
  failing: (app) => ({ CONFORMANCE_FAIL: app }),
});
