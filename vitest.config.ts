import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["src/**/*.test.ts", "test/**/*.test.ts", "console/src/**/*.test.ts"],
    // The CLI the tests run is the compiled package (built when stale), and the kubernetes
    // tests' control plane is started once per run (see the files).
    globalSetup: ["test/build-setup.ts", "test/kubernetes/global-setup.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Integration tests start real processes; two cores are not enough for many files at once.
    maxWorkers: 2,
    typecheck: { enabled: true, include: ["src/**/*.test-d.ts", "test/**/*.test-d.ts"] },
  },
});
