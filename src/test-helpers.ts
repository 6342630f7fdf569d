// Helpers shared by the unit tests (not part of the package's API).
import type { AppSpec } from "./backends/contract.ts";
import { CaravanError } from "./errors.ts";

/** Runs `fn`, which must throw a CaravanError, and returns that error. */
export function errorOf(fn: () => unknown): CaravanError {
  try {
    fn();
  } catch (e) {
    if (e instanceof CaravanError) return e;
    throw e;
  }
  throw new Error("expected a CaravanError, but nothing was thrown");
}

/** The line of the file that called it. */
export function callerLine(): number {
  const frame = new Error().stack!.split("\n")[2]!;
  return Number(/:(\d+):\d+\)?$/.exec(frame)![1]);
}

/** An app's normalised spec with the seed SDK's defaults, for backend unit tests. */
export function appSpec(overrides: Partial<AppSpec> = {}): AppSpec {
  return {
    kind: "app",
    name: "web",
    dependsOn: [],
    envVars: {},
    secrets: [],
    serveKind: "fastify",
    port: { port: 8080 },
    args: [],
    scaling: { replicas: [0, 1], scaledownAfter: 900 },
    timeouts: { start: 60 },
    links: [],
    include: [],
    requiresAuth: true,
    inputs: [],
    readiness: {},
    ...overrides,
  };
}
