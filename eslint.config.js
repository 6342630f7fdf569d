import js from "@eslint/js";
import tseslint from "typescript-eslint";

/** An import of a backend's internals: `…/backends/local/…`, `…/backends/kubernetes/…`. */
const BACKEND_INTERNALS = /(^|\/)backends\/(local|kubernetes)(\/|$)/;
const BACKEND_INTERNALS_WHY =
  "a backend's internals are its own: use backends/registry.ts (backendProvider, capabilities) and backends/contract.ts";

export default tseslint.config(
  { ignores: ["node_modules/**", "coverage/**", "dist/**"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: "readonly", console: "readonly", URL: "readonly" } },
    rules: {
      "@typescript-eslint/no-unused-vars": [
        "error",
        { argsIgnorePattern: "^_", varsIgnorePattern: "^_" },
      ],
      "@typescript-eslint/no-explicit-any": "off",
    },
  },
  {
    // A backend's internals are its own: everything else reaches a backend through the
    // registry (backends/registry.ts) and the contract (backends/contract.ts). Dynamic
    // import() is checked too (no-restricted-imports sees only static imports and exports).
    files: [
      "src/api.ts",
      "src/runs.ts",
      "src/cli/**/*.ts",
      "src/engine/**/*.ts",
      "src/server/**/*.ts",
      "src/sdk/**/*.ts",
      "src/plan/**/*.ts",
    ],
    rules: {
      "no-restricted-imports": [
        "error",
        { patterns: [{ regex: BACKEND_INTERNALS.source, message: BACKEND_INTERNALS_WHY }] },
      ],
      "no-restricted-syntax": [
        "error",
        {
          selector: `ImportExpression[source.value=${BACKEND_INTERNALS}]`,
          message: BACKEND_INTERNALS_WHY,
        },
        {
          selector: `TSImportType[argument.literal.value=${BACKEND_INTERNALS}]`,
          message: BACKEND_INTERNALS_WHY,
        },
      ],
    },
  },
  {
    // The runtime runs inside user processes: it must never pull in the control plane.
    files: ["src/runtime/**/*.ts"],
    rules: {
      "no-restricted-imports": [
        "error",
        { patterns: ["../backends/*", "../server/*", "../cli/*", "../engine/*"] },
      ],
    },
  },
);
