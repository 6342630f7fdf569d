/**
 * What a process of an environment is given, in one place: its variables (declared env vars,
 * inputs, dependency endpoints, caravan's launch variables) and a command app's argv with
 * `$PORT`, `$NAME` and `${VAR}` expanded. The client's pre-check (an unknown `${VAR}` fails
 * before anything starts) and every backend build them here, so they cannot drift. Pure.
 * Secrets and the run token are not here: a backend adds them at launch (a local process's
 * environment, a pod's `secretKeyRef`), and they are never expanded into an argv.
 */
import type { Endpoints, EnvironmentSpec, Scope } from "./contract.ts";
import { API_URL_ENV, type LaunchVar } from "../runtime/protocol.ts";
import { endpointVar, expandVars } from "../sdk/vars.ts";

/** The part of a deploy request a launch depends on. */
export interface LaunchSource {
  scope: Scope;
  name: string;
  spec: EnvironmentSpec;
  /** Resolved input values by input name. */
  inputs: Record<string, string>;
  /** Endpoints of the app dependencies, by name. */
  dependencies: Record<string, Endpoints>;
  /** The revision being launched (a deploy request's), for telemetry's resource attributes. */
  revision?: string;
}

/** Where the backend puts what a process reaches at run time. */
export interface LaunchSettings {
  /** Path of the JSON file with every input and dependency endpoint (`CARAVAN_INPUTS_FILE`). */
  inputsFile: string;
  /** The run API's URL (`CARAVAN_API_URL`), or "" where there is none. */
  apiUrl: string;
  /**
   * Where the process sends OpenTelemetry data (OTLP over HTTP), if anywhere: the standard
   * `OTEL_*` variables are set only then. `replica` names the process among its app's
   * replicas. The credential (`OTEL_EXPORTER_OTLP_HEADERS`) is the backend's to add.
   */
  otlp?: { endpoint: string; replica?: string };
}

/** The environment variables of a process of `src` (no secrets, no run token). */
export function launchEnvironment(
  src: LaunchSource,
  settings: LaunchSettings,
): Record<string, string> {
  const env: Record<string, string> = { ...src.spec.envVars };
  if (src.spec.kind === "app" || src.spec.kind === "job") {
    for (const input of src.spec.inputs) {
      const value = src.inputs[input.name];
      if (value !== undefined) env[input.envVar] = value;
    }
  }
  for (const [dep, ep] of Object.entries(src.dependencies)) {
    env[endpointVar(dep)] = ep.internalEndpoint;
  }
  const launch: Record<LaunchVar, string> = {
    CARAVAN_APP_NAME: src.name,
    CARAVAN_PROJECT: src.scope.project,
    CARAVAN_DOMAIN: src.scope.domain,
    CARAVAN_INPUTS_FILE: settings.inputsFile,
    [API_URL_ENV]: settings.apiUrl,
  };
  Object.assign(env, launch);
  if (settings.otlp) Object.assign(env, otelVariables(src, settings.otlp));
  return env;
}

/**
 * The OpenTelemetry SDK's standard variables, so an app in any language with an SDK reports
 * to caravan as it is: the service is the environment, the resource says where it runs.
 * What the app declares itself (`envVars`) wins. `tracing: false` sets `OTEL_SDK_DISABLED`,
 * the switch every SDK (and caravan's runtime) honours.
 */
function otelVariables(
  src: LaunchSource,
  otlp: NonNullable<LaunchSettings["otlp"]>,
): Record<string, string> {
  const resource: [string, string | undefined][] = [
    ["caravan.project", src.scope.project],
    ["caravan.domain", src.scope.domain],
    ["caravan.revision", src.revision],
    ["caravan.replica", otlp.replica],
  ];
  const vars: Record<string, string> = {
    OTEL_EXPORTER_OTLP_ENDPOINT: otlp.endpoint,
    OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
    OTEL_SERVICE_NAME: src.name,
    OTEL_RESOURCE_ATTRIBUTES: resource
      .filter(([, v]) => v)
      .map(([k, v]) => `${k}=${encodeURIComponent(v!)}`)
      .join(","),
    ...(src.spec.tracing === false ? { OTEL_SDK_DISABLED: "true" } : {}),
  };
  for (const key of Object.keys(vars)) if (key in src.spec.envVars) delete vars[key];
  return vars;
}

/**
 * A command app's or job's argv: its `command` and `args` with `$PORT` (an app's), `$NAME` and
 * every variable of `env` expanded. Throws `UNKNOWN_VARIABLE` naming an undefined `${VAR}`.
 */
export function commandArgv(
  src: LaunchSource,
  env: Record<string, string>,
  port: number | string,
): string[] {
  if (src.spec.kind === "task" || !src.spec.command) return [];
  const vars: Record<string, string> = { ...env, NAME: src.name };
  if (src.spec.kind === "app") {
    vars.PORT = String(port);
    // $HOST: where to listen; a backend that sets none (a pod) means every interface.
    vars.HOST ??= "0.0.0.0";
  }
  return [...src.spec.command, ...src.spec.args].map((a) => expandVars(a, vars, src.name));
}

/**
 * The `$CARAVAN_INPUTS_FILE` document: every input and dependency endpoint, for programs that
 * prefer a file to environment variables. No secrets in it.
 */
export function inputsDocument(src: LaunchSource) {
  return {
    app: src.name,
    project: src.scope.project,
    domain: src.scope.domain,
    inputs: src.inputs,
    inputEnvVars: Object.fromEntries(
      src.spec.kind === "task" ? [] : src.spec.inputs.map((i) => [i.name, i.envVar]),
    ),
    endpoints: src.dependencies,
  };
}

/**
 * Checks a command app's arguments before anything starts: every `${VAR}` must be defined
 * once the app runs. Values do not matter here, only which variables exist.
 */
export function checkCommandVariables(
  scope: Scope,
  spec: EnvironmentSpec,
  appDependencies: readonly string[],
): void {
  if (spec.kind === "task" || !spec.command) return;
  const src: LaunchSource = {
    scope,
    name: spec.name,
    spec,
    inputs: Object.fromEntries(spec.inputs.map((i) => [i.name, ""])),
    dependencies: Object.fromEntries(
      appDependencies.map((d) => [d, { endpoint: "", internalEndpoint: "" }]),
    ),
  };
  commandArgv(src, launchEnvironment(src, { inputsFile: "", apiUrl: "" }), "");
}
