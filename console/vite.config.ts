import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";

/**
 * The web console, built at package build time into dist/console, which the control plane
 * serves under /console/ (hashed assets cached for good, the index never).
 */
export default defineConfig({
  root: fileURLToPath(new URL(".", import.meta.url)),
  base: "/console/",
  logLevel: "warn",
  build: {
    outDir: fileURLToPath(new URL("../dist/console", import.meta.url)),
    emptyOutDir: true,
    // Served from the package, offline: no inlined data URLs the CSP would have to allow.
    assetsInlineLimit: 0,
    target: "es2022",
  },
  oxc: { jsx: { runtime: "automatic", importSource: "preact" } },
});
