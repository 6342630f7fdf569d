import { describe, expect, test } from "vitest";
import type { AppSpec } from "./contract.ts";
import { appSpec } from "../test-helpers.ts";
import { checkCommandVariables, commandArgv, inputsDocument, launchEnvironment } from "./launch.ts";

const scope = { project: "shop", domain: "dev" };
const spec: AppSpec = appSpec({
  dependsOn: ["api"],
  envVars: { MODE: "fast" },
  secrets: [{ key: "TOKEN", envVar: "TOKEN" }],
  serveKind: "command",
  command: ["server", "--port", "$PORT", "--api", "${CARAVAN_ENDPOINT_API}"],
  args: ["--mode=${MODE}", "--in=${GREETING}"],
  inputs: [{ name: "greeting", value: "hi", envVar: "GREETING" }],
});
const src = {
  scope,
  name: "web",
  spec,
  inputs: { greeting: "hello" },
  dependencies: { api: { endpoint: "http://pub", internalEndpoint: "http://int" } },
};

describe("launch environment", () => {
  test("env vars, inputs, dependency endpoints and caravan's launch variables", () => {
    const env = launchEnvironment(src, { inputsFile: "/in.json", apiUrl: "http://api" });
    expect(env).toEqual({
      MODE: "fast",
      GREETING: "hello",
      CARAVAN_ENDPOINT_API: "http://int",
      CARAVAN_APP_NAME: "web",
      CARAVAN_PROJECT: "shop",
      CARAVAN_DOMAIN: "dev",
      CARAVAN_INPUTS_FILE: "/in.json",
      CARAVAN_API_URL: "http://api",
    });
    expect(Object.values(env)).not.toContain("TOKEN");
  });

  test("a command's argv is expanded from the same variables", () => {
    const env = launchEnvironment(src, { inputsFile: "", apiUrl: "" });
    expect(commandArgv(src, env, 4000)).toEqual([
      "server",
      "--port",
      "4000",
      "--api",
      "http://int",
      "--mode=fast",
      "--in=hello",
    ]);
  });

  test("the pre-check accepts every variable a launch defines, and names one it does not", () => {
    expect(() => checkCommandVariables(scope, spec, ["api"])).not.toThrow();
    expect(() =>
      checkCommandVariables(scope, { ...spec, args: ["${CARAVAN_API_URL}", "${NOPE}"] }, ["api"]),
    ).toThrow(/\$\{NOPE\}/);
    // A dependency's endpoint variable exists only for a dependency.
    expect(() => checkCommandVariables(scope, spec, [])).toThrow(/CARAVAN_ENDPOINT_API/);
  });

  test("the inputs document names each input's variable", () => {
    expect(inputsDocument(src)).toMatchObject({
      app: "web",
      inputs: { greeting: "hello" },
      inputEnvVars: { greeting: "GREETING" },
      endpoints: { api: { internalEndpoint: "http://int" } },
    });
  });
});
