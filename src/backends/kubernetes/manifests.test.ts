import { describe, expect, test } from "vitest";
import { appSpec } from "../../test-helpers.ts";
import type { AppSpec, DeployRequest } from "../contract.ts";
import {
  ANNOTATIONS,
  LABELS,
  appObjects,
  contentConfigMap,
  endpointOf,
  imageOf,
  namespaceFor,
  type ManifestContext,
} from "./manifests.ts";

const scope = { project: "shop", domain: "dev" };
const spec: AppSpec = appSpec({
  dependsOn: ["api"],
  envVars: { MODE: "fast" },
  secrets: [{ key: "API_KEY", envVar: "API_KEY" }],
  timeouts: { start: 30 },
  requiresAuth: false,
  inputs: [{ name: "greeting", value: "hi", envVar: "GREETING" }],
  resources: { milliCpu: 1000, memoryBytes: 512 * 1024 * 1024 },
});
const api = endpointOf("api", "shop-dev");
const req: DeployRequest & { spec: AppSpec } = {
  scope,
  name: "web",
  kind: "app",
  spec,
  revision: "abc123",
  code: {
    hash: "c0de",
    entry: "/h/bundles/c0de/entry.js",
    sourceRoot: "/src",
    runtime: "/h/rt/r1/runtime/main.js",
  },
  inputs: { greeting: "hello" },
  dependencies: { api: { endpoint: api, internalEndpoint: api } },
};
const ctx: ManifestContext = {
  namespace: "shop-dev",
  code: { name: "web-code-c0de", items: [{ key: "f0-entry.js", path: "entry.js" }] },
  runtime: {
    name: "web-runtime-r1",
    items: [{ key: "f0-runtime_main.js", path: "runtime/main.js" }],
  },
  inputs: { greeting: "hello" },
  entry: "entry.js",
  secretName: "caravan-secrets",
  now: "2026-01-01T00:00:00.000Z",
};

const find = (kind: string) => appObjects(req, ctx).find((o) => o.kind === kind)! as any;

describe("namespace and endpoints", () => {
  test("one namespace per project/domain, DNS-1123 checked; endpoints are deterministic", () => {
    expect(namespaceFor(scope)).toBe("shop-dev");
    expect(namespaceFor(scope, "custom")).toBe("custom");
    expect(() => namespaceFor({ project: "a".repeat(40), domain: "b".repeat(30) })).toThrow(
      /63 characters/,
    );
    expect(api).toBe("http://api.shop-dev.svc.cluster.local");
  });
});

describe("an app's objects", () => {
  test("Deployment: labels, revision annotation, rolling update that never drops a replica", () => {
    const d = find("Deployment");
    expect(d.metadata.labels).toMatchObject({
      "app.kubernetes.io/managed-by": "caravan",
      [LABELS.project]: "shop",
      [LABELS.domain]: "dev",
      [LABELS.environment]: "web",
    });
    expect(d.metadata.annotations[ANNOTATIONS.revision]).toBe("abc123");
    expect(JSON.parse(d.metadata.annotations[ANNOTATIONS.dependsOn])).toEqual(["api"]);
    expect(d.spec.strategy.rollingUpdate.maxUnavailable).toBe(0);
    expect(d.spec.template.metadata.labels[LABELS.revision]).toBe("abc123");
    expect(d.spec.selector.matchLabels).not.toHaveProperty(LABELS.revision);
    expect(d.spec.replicas).toBe(1);
    expect(d.spec.progressDeadlineSeconds).toBe(30);
  });

  test("the container gets the launch environment, the runtime config and secretKeyRefs, never values", () => {
    const c = find("Deployment").spec.template.spec.containers[0];
    const env = Object.fromEntries(c.env.map((e: any) => [e.name, e.value ?? e.valueFrom]));
    expect(env.CARAVAN_ENDPOINT_API).toBe(api);
    expect(env.GREETING).toBe("hello");
    expect(env.MODE).toBe("fast");
    expect(env.API_KEY).toEqual({ secretKeyRef: { name: "caravan-secrets", key: "API_KEY" } });
    const runtime = JSON.parse(env.CARAVAN_RUNTIME);
    expect(runtime).toMatchObject({
      name: "web",
      entry: "/app/.caravan/code/entry.js",
      host: "0.0.0.0",
      port: 8080,
      endpoints: { api },
    });
    expect(c.command).toEqual(["node", "/app/.caravan/runtime/runtime/main.js"]);
    expect(c.resources).toEqual({
      requests: { cpu: "1000m", memory: String(512 * 1024 * 1024) },
      limits: { memory: String(512 * 1024 * 1024) },
    });
    // caravan's runtime answers the probes once the app serves.
    expect(c.readinessProbe.httpGet).toEqual({ path: "/ready", port: 8022 });
    expect(env.CARAVAN_HEALTH_PORT).toBe("8022");
    expect(c.startupProbe.failureThreshold).toBe(30);
    expect(c.lifecycle.preStop.sleep.seconds).toBeGreaterThan(0);
  });

  test("OTEL_* variables only when the config names a collector (kubernetes.otlpEndpoint)", () => {
    const envOf = (c: ManifestContext) =>
      Object.fromEntries(
        (
          appObjects(req, c).find((o) => o.kind === "Deployment") as any
        ).spec.template.spec.containers[0].env.map((e: any) => [e.name, e.value]),
      );
    expect(Object.keys(envOf(ctx)).filter((k) => k.startsWith("OTEL_"))).toEqual([]);
    expect(envOf({ ...ctx, otlpEndpoint: "http://collector.obs:4318" })).toMatchObject({
      OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector.obs:4318",
      OTEL_SERVICE_NAME: "web",
      OTEL_RESOURCE_ATTRIBUTES: "caravan.project=shop,caravan.domain=dev,caravan.revision=abc123",
    });
  });

  test("Service: ClusterIP on port 80 to the app's port, selecting its pods", () => {
    const s = find("Service");
    expect(s.spec.type).toBe("ClusterIP");
    expect(s.spec.ports[0]).toMatchObject({ port: 80, targetPort: "http" });
    expect(s.spec.selector[LABELS.environment]).toBe("web");
  });

  test("a command app runs its expanded argv with an HTTP probe on its readiness path", () => {
    const cmd = {
      ...req,
      spec: {
        ...spec,
        serveKind: "command" as const,
        command: ["python3", "-m", "http.server", "$PORT"],
        args: ["--dir", "${CARAVAN_ENDPOINT_API}"],
        readiness: { path: "/healthz" },
      },
    };
    const d = appObjects(cmd, ctx).find((o) => o.kind === "Deployment") as any;
    const c = d.spec.template.spec.containers[0];
    expect(c.command).toEqual(["python3", "-m", "http.server", "8080", "--dir", api]);
    expect(c.readinessProbe.httpGet).toEqual({ path: "/healthz", port: "http" });
    expect(c.env.map((e: any) => e.name)).not.toContain("CARAVAN_RUNTIME");
    expect(d.spec.template.spec.volumes.map((v: any) => v.name)).not.toContain("runtime");
    expect(c.livenessProbe).toBeUndefined();
  });

  test("a declared liveness check becomes the container's livenessProbe", () => {
    const live = {
      ...req,
      spec: { ...spec, liveness: { path: "/alive", intervalS: 5, failures: 4 } },
    };
    const d = appObjects(live, ctx).find((o) => o.kind === "Deployment") as any;
    expect(d.spec.template.spec.containers[0].livenessProbe).toEqual({
      httpGet: { path: "/alive", port: "http" },
      periodSeconds: 5,
      failureThreshold: 4,
    });
  });

  test("per-environment pod settings reach the pod; caravan's own labels win", () => {
    const custom = {
      ...req,
      spec: {
        ...spec,
        kubernetes: {
          podLabels: { team: "web", [LABELS.environment]: "spoofed" },
          podAnnotations: { "caravan.test/ready-after": "3" },
          serviceAccountName: "runner",
          nodeSelector: { pool: "general" },
        },
      },
    };
    const pod = (appObjects(custom, ctx).find((o) => o.kind === "Deployment") as any).spec.template;
    expect(pod.metadata.labels).toMatchObject({ team: "web", [LABELS.environment]: "web" });
    expect(pod.metadata.annotations["caravan.test/ready-after"]).toBe("3");
    expect(pod.spec).toMatchObject({
      serviceAccountName: "runner",
      nodeSelector: { pool: "general" },
    });
  });

  test("scaling: min == max is a fixed count; min < max an autoscaler that owns the count", () => {
    const scaled = (replicas: [number, number], declared = true) => {
      const objects = appObjects(
        {
          ...req,
          spec: {
            ...spec,
            scaling: {
              replicas,
              scaledownAfter: 1,
              ...(declared ? { replicasDeclared: true as const } : {}),
            },
          },
        },
        ctx,
      ) as any[];
      return {
        deployment: objects.find((o) => o.kind === "Deployment"),
        hpa: objects.find((o) => o.kind === "HorizontalPodAutoscaler"),
      };
    };
    const fixed = scaled([3, 3]);
    expect(fixed.deployment.spec.replicas).toBe(3);
    expect(fixed.hpa).toBeUndefined();
    const auto = scaled([2, 5]);
    // Left out of caravan's apply, so caravan and the autoscaler never fight over it.
    expect(auto.deployment.spec).not.toHaveProperty("replicas");
    expect(auto.hpa.spec).toMatchObject({
      minReplicas: 2,
      maxReplicas: 5,
      scaleTargetRef: { kind: "Deployment", name: "web" },
    });
    // No replicas declared (the seed's default [0, 1]): one replica, nothing asked to scale.
    expect(scaled([0, 1], false).deployment.spec.replicas).toBe(1);
  });

  test("the same request gives the same objects (unchanged is decided by revision)", () => {
    expect(appObjects(req, ctx)).toEqual(appObjects(req, ctx));
  });
});

describe("content ConfigMaps", () => {
  test("immutable, binary, flat keys mapped back to paths", () => {
    const { object, items } = contentConfigMap("web-code-c0de", "ns", {}, "code", [
      { path: "entry.js", contents: Buffer.from("export {}") },
      { path: "chunks/a-1.js", contents: Buffer.from("x") },
    ]);
    expect(object.immutable).toBe(true);
    expect(items.map((i) => i.path)).toEqual(["entry.js", "chunks/a-1.js"]);
    for (const i of items) expect(i.key).toMatch(/^[-._a-zA-Z0-9]+$/);
    expect(Buffer.from((object as any).binaryData[items[0]!.key], "base64").toString()).toBe(
      "export {}",
    );
  });
});

describe("images", () => {
  test("an image reference is used as it is; a built image is named by its content tag", () => {
    expect(imageOf(spec)).toBe("node:22-bookworm-slim");
    const ref = {
      base: { kind: "ref" as const, ref: "python:3.12" },
      npmPackages: [],
      aptPackages: [],
      env: {},
      tag: "t1",
    };
    expect(imageOf({ ...spec, image: ref })).toBe("python:3.12");
    expect(imageOf({ ...spec, image: { ...ref, npmPackages: ["fastify"] } })).toBe(
      "caravan-web:t1",
    );
  });
});

describe("what a cluster cannot honour", () => {
  test("a declared minimum of 0 is refused before anything is applied, saying what to do", async () => {
    const { KubernetesBackend } = await import("./backend.ts");
    const backend = new KubernetesBackend({} as never, { project: "shop", domain: "dev" });
    const app = (replicas: [number, number], declared: boolean) => ({
      ...spec,
      scaling: {
        replicas,
        scaledownAfter: 1,
        ...(declared ? { replicasDeclared: true as const } : {}),
      },
    });
    expect(() => backend.validate(scope, [app([0, 3], true)])).toThrow(
      /scaling.replicas \[0, 3\] asks to scale to zero.*replicas: \[1, 3\]/,
    );
    // The default [0, 1], never declared, runs one replica.
    expect(() => backend.validate(scope, [app([0, 1], false), app([1, 3], true)])).not.toThrow();
  });
});
