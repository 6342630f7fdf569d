import js from "@eslint/js";
import tseslint from "typescript-eslint";

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
