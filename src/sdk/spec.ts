/**
 * The normalised, JSON-only description of an environment (`Environment.spec()`): what the
 * planner hashes and what every backend receives in a deploy request. One typed shape, so a
 * backend reads fields, never casts.
 */
import type { ImageSpec } from "./image.ts";
import type { NormalizedResources } from "./resources.ts";

/** An input's value as declared (resolved values travel separately, in `DeployRequest.inputs`). */
export type InputValueSpec =
  | string
  | {
      kind: "app-endpoint";
      appName: string;
      public: boolean;
      project?: string;
      domain?: string;
    }
  | { kind: "run-output"; taskName?: string; runId?: string }
  | { kind: "file" | "dir"; path: string };

export interface InputSpec {
  name: string;
  value: InputValueSpec;
  /** The environment variable the value arrives in. */
  envVar: string;
  mount?: string;
}

interface CommonSpec {
  name: string;
  /** Names of direct dependencies, sorted. */
  dependsOn: string[];
  /** Those of them that are soft (`wait: false`): started after, not waited for. */
  softDependsOn?: string[];
  image?: ImageSpec & { tag: string };
  resources?: NormalizedResources;
  envVars: Record<string, string>;
  /**
   * `false`: caravan's runtime traces nothing and `OTEL_SDK_DISABLED=true` is set (absent:
   * traced, so specs from before tracing keep their hash).
   */
  tracing?: false;
  /** Secret names and the variables they arrive in; never values. */
  secrets: { key: string; envVar: string }[];
  description?: string;
  /** Settings for pods (kubernetes backend only). */
  kubernetes?: {
    podLabels?: Record<string, string>;
    podAnnotations?: Record<string, string>;
    serviceAccountName?: string;
    nodeSelector?: Record<string, string>;
    tolerations?: Record<string, string | number>[];
  };
}

export interface AppSpec extends CommonSpec {
  kind: "app";
  serveKind: "fastify" | "hono" | "express" | "function" | "command";
  /** `declared`: given by the user, not the default (a local command app cannot honour one). */
  port: { port: number; name?: string; declared?: true };
  command?: string[];
  args: string[];
  scaling: {
    replicas: [number, number];
    concurrency?: number;
    scaledownAfter: number;
    /** The replicas were given (not the default [0, 1]). */
    replicasDeclared?: true;
  };
  timeouts: { request?: number; start: number };
  links: { path: string; title: string; isRelative?: boolean }[];
  include: string[];
  ingress?: { subdomain?: string; customDomain?: string };
  requiresAuth: boolean;
  inputs: InputSpec[];
  readiness: { path?: string; tcp?: boolean };
  /** A check of a serving replica; after `failures` in a row it is restarted. */
  liveness?: { path?: string; tcp?: boolean; intervalS: number; failures: number };
}

export interface TaskSpec extends CommonSpec {
  kind: "task";
  tasks: { id: string; retries?: number; timeout?: number; concurrency?: number }[];
}

export interface JobSpec extends CommonSpec {
  kind: "job";
  /** A command (any language) or a TypeScript function run by caravan's runtime. */
  runKind: "command" | "function";
  command?: string[];
  args: string[];
  include: string[];
  inputs: InputSpec[];
  /** Attempts after a failed one. */
  retries: number;
  /** Seconds one attempt may take. */
  timeouts: { run: number };
}

export type EnvironmentSpec = AppSpec | TaskSpec | JobSpec;
