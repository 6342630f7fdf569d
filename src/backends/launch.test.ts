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

  test("with a receiver: the standard OTEL_* variables (the app's own win)", () => {
    const env = launchEnvironment(
      { ...src, revision: "abc123" },
      {
        inputsFile: "",
        apiUrl: "",
        otlp: { endpoint: "http://127.0.0.1:7/otlp", replica: "4100" },
      },
    );
    expect(env).toMatchObject({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:7/otlp",
      OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
      OTEL_SERVICE_NAME: "web",
      OTEL_RESOURCE_ATTRIBUTES:
        "caravan.project=shop,caravan.domain=dev,caravan.revision=abc123,caravan.replica=4100",
    });
    expect(env.OTEL_SDK_DISABLED).toBeUndefined();
    const own = launchEnvironment(
      { ...src, spec: { ...spec, envVars: { OTEL_SERVICE_NAME: "mine" }, tracing: false } },
      { inputsFile: "", apiUrl: "", otlp: { endpoint: "http://x/otlp" } },
    );
    expect(own.OTEL_SERVICE_NAME).toBe("mine");
    expect(own.OTEL_SDK_DISABLED).toBe("true");
    // Without a receiver (a cluster with no collector named): none at all.
    const none = launchEnvironment(src, { inputsFile: "", apiUrl: "" });
    expect(Object.keys(none).filter((k) => k.startsWith("OTEL_"))).toEqual([]);
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
