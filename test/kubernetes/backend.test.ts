/**
 * The kubernetes backend against a real API server, controller manager and scheduler (pods
 * simulated by kwok): DESIGN §3 through `--backend kubernetes`, checked in the cluster's own
 * objects.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ROOT } from "../helpers.ts";
import { fixture, json, statuses, type DeploymentJSON } from "../support.ts";
import { clusterAvailable, scoped, useKubeSandbox } from "./support.ts";

const GRAPH = fixture("kubernetes/graph.ts");
const t = (iso: string) => Date.parse(iso);

// A rollout waits up to an app's start timeout (60 s) and more on a loaded machine.
describe.skipIf(!clusterAvailable())("kubernetes backend", { timeout: 180_000 }, () => {
  const k = useKubeSandbox();

  async function deploy(args: string[], env: NodeJS.ProcessEnv = {}) {
    const r = await k.sb.run(scoped(k, "deploy", ...args, "--json"), { env });
    const { deployments } = json<{ deployments: DeploymentJSON[] }>(r);
    return { ...r, by: Object.fromEntries(deployments.map((d) => [d.name, d])), deployments };
  }

  it("deploys a chain in order: each created only after its dependency is ready", async () => {
    const r = await deploy([GRAPH, "top"], { K8S_READY_AFTER: "3" });
    expect(r.code, r.stderr).toBe(0);
    expect(statuses(r.deployments)).toEqual({ base: "ready", middle: "ready", top: "ready" });
    const ns = k.namespace();
    expect(r.by.top!.internalEndpoint).toBe(`http://top.${ns}.svc.cluster.local`);

    const kube = k.kube();
    const deployments = (await kube.list("Deployment", ns)).items;
    const created = Object.fromEntries(
      deployments.map((d: any) => [d.metadata.name, t(d.metadata.creationTimestamp)]),
    );
    const pods = (await kube.list("Pod", ns)).items;
    const readyAt = (app: string) =>
      t(
        pods
          .find((p: any) => p.metadata.labels["caravan.dev/environment"] === app)
          .status.conditions.find((c: any) => c.type === "Ready").lastTransitionTime,
      );
    // base became ready ~3 s after it was created, and middle was created only then.
    expect(readyAt("base") - created.base!).toBeGreaterThanOrEqual(2000);
    expect(created.middle!).toBeGreaterThanOrEqual(readyAt("base"));
    // Timestamps have 1 s resolution: middle's creation is also checked against the ~3 s
    // base took, so an order broken by less than a second cannot pass.
    expect(created.middle! - created.base!).toBeGreaterThanOrEqual(2000);
    expect(created.top!).toBeGreaterThanOrEqual(readyAt("middle"));

    // The objects are what DESIGN §8 says: labels, revision annotation, endpoints injected.
    const top = deployments.find((d: any) => d.metadata.name === "top") as any;
    expect(top.metadata.labels).toMatchObject({
      "app.kubernetes.io/managed-by": "caravan",
      "caravan.dev/project": k.project(),
      "caravan.dev/environment": "top",
    });
    expect(top.metadata.annotations["caravan.dev/revision"]).toBe(r.by.top!.revision);
    const env = top.spec.template.spec.containers[0].env;
    expect(env).toContainEqual({
      name: "CARAVAN_ENDPOINT_MIDDLE",
      value: `http://middle.${ns}.svc.cluster.local`,
    });
    const service = (await kube.get("Service", ns, "middle")) as any;
    expect(service.spec.ports[0].port).toBe(80);
    const middle = deployments.find((d: any) => d.metadata.name === "middle") as any;
    expect(middle.spec.template.spec.containers[0].command).toEqual([
      "python3",
      "-m",
      "http.server",
      "8080",
    ]);
  });

  it("a crashing dependency fails with CrashLoopBackOff, skips its dependents, and an independent branch finishes", async () => {
    const r = await deploy([GRAPH, "needs-broken", "independent"], { K8S_CRASH: "broken" });
    expect(r.code).toBe(1);
    expect(statuses(r.deployments)).toEqual({
      broken: "failed",
      "needs-broken": "skipped",
      independent: "ready",
    });
    expect(r.by.broken!.error).toMatch(/CrashLoopBackOff/);
    expect(r.by["needs-broken"]!.error).toBe("dependency broken failed");
    // Nothing was applied for the skipped one.
    expect(await k.kube().get("Deployment", k.namespace(), "needs-broken")).toBeUndefined();

    const s = await k.sb.run(scoped(k, "status", "--json"));
    const envs = Object.fromEntries(
      json<{ environments: any[] }>(s).environments.map((e) => [e.name, e]),
    );
    expect(envs.broken.state).toBe("failed");
    expect(envs.broken.restarts).toBeGreaterThan(0);
    expect(envs.independent.state).toBe("ready");
    expect(envs.independent.instances).toHaveLength(1);
    expect(envs.independent).toMatchObject({ replicas: 1, desiredReplicas: 1 });
    expect(envs.independent.instances[0]).toMatchObject({ ready: true });
  });

  it("an unchanged redeploy writes nothing; a changed spec rolls only the changed app", async () => {
    const first = await deploy([GRAPH, "top"]);
    expect(first.code, first.stderr).toBe(0);
    const kube = k.kube();
    const generation = async (name: string) =>
      ((await kube.get("Deployment", k.namespace(), name)) as any).metadata.generation;
    const before = { base: await generation("base"), top: await generation("top") };

    const again = await deploy([GRAPH, "top"]);
    expect(statuses(again.deployments)).toEqual({
      base: "unchanged",
      middle: "unchanged",
      top: "unchanged",
    });

    const changed = await deploy([GRAPH, "top"], { K8S_GREETING: "bonjour" });
    expect(changed.code, changed.stderr).toBe(0);
    expect(statuses(changed.deployments)).toEqual({
      base: "unchanged",
      middle: "unchanged",
      top: "ready",
    });
    expect(changed.by.top!.revision).not.toBe(first.by.top!.revision);
    expect(await generation("base")).toBe(before.base);
    expect(await generation("top")).toBeGreaterThan(before.top);
  });

  it("a failed new revision leaves the previous one serving", async () => {
    const first = await deploy([GRAPH, "broken"]);
    expect(first.code, first.stderr).toBe(0);
    const failed = await deploy([GRAPH, "broken"], { K8S_CRASH: "broken" });
    expect(failed.code).toBe(1);
    expect(failed.by.broken!.error).toMatch(/CrashLoopBackOff/);
    const d = (await k.kube().get("Deployment", k.namespace(), "broken")) as any;
    expect(d.status.availableReplicas).toBeGreaterThanOrEqual(1);
    const s = json<{ environments: any[] }>(await k.sb.run(scoped(k, "status", "--json")));
    expect(s.environments[0].error).toMatch(/previous revision still serves/);
  });

  it("stop scales to zero and keeps the definition; delete goes dependents first and leaves no object", async () => {
    const r = await deploy([GRAPH, "top"]);
    expect(r.code, r.stderr).toBe(0);
    const refused = await k.sb.run(scoped(k, "stop", "base"));
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/middle, top depend on it/);

    const stopped = await k.sb.run(scoped(k, "stop", "top"));
    expect(stopped.code, stopped.stderr).toBe(0);
    const ns = k.namespace();
    expect(((await k.kube().get("Deployment", ns, "top")) as any).spec.replicas).toBe(0);
    const s = json<{ environments: any[] }>(await k.sb.run(scoped(k, "status", "--json")));
    expect(s.environments.find((e) => e.name === "top").state).toBe("stopped");

    // top is stopped, so it does not hold base back: name it to delete it too.
    const deleted = await k.sb.run(scoped(k, "delete", "base", "top", "--cascade"));
    expect(deleted.code, deleted.stderr).toBe(0);
    const order = deleted.stdout + deleted.stderr;
    expect(order.indexOf("top")).toBeLessThan(order.indexOf("middle"));
    expect(order.indexOf("middle")).toBeLessThan(order.indexOf("base"));
    const selector = "app.kubernetes.io/managed-by=caravan";
    for (const kind of ["Deployment", "Service", "ConfigMap", "Pod"] as const) {
      expect((await k.kube().list(kind, ns, selector)).items, kind).toEqual([]);
    }
    const after = json<{ environments: any[] }>(await k.sb.run(scoped(k, "status", "--json")));
    expect(after.environments).toEqual([]);
  });

  it("an unchanged deploy of 21 apps makes a bounded number of API calls and no write", async () => {
    const first = await deploy([fixture("kubernetes/fan-out.ts")]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.deployments).toHaveLength(21);
    const out = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        [
          join(ROOT, "node_modules/tsx/dist/cli.mjs"),
          fixture("kubernetes/count-calls.ts"),
          k.project(),
        ],
        { cwd: ROOT, env: k.sb.env, timeout: 60_000 },
        (err, stdout, stderr) => (err ? reject(new Error(stderr || err.message)) : resolve(stdout)),
      ),
    );
    const { statuses: st, calls } = JSON.parse(out.trim().split("\n").at(-1)!);
    expect(Object.values(st)).toEqual(Array(21).fill("unchanged"));
    expect(calls.writes).toBe(0);
    // status before planning (7 lists) + one listing of the namespace (3: apps, task
    // environments, jobs) + its gateway ports (1): not one GET per app.
    expect(calls.total).toBeLessThanOrEqual(11);
  });

  it.each(readdirSync(join(ROOT, "examples")).filter((f) => f.endsWith(".ts")))(
    "the seed scenario %s deploys, every environment ready",
    async (file) => {
      const r = await deploy([join(ROOT, "examples", file)]);
      expect(r.code, r.stderr).toBe(0);
      for (const d of r.deployments) expect(d.status, `${d.name}: ${d.error}`).toBe("ready");
      for (const d of r.deployments.filter((x) => x.kind === "app"))
        expect(d.internalEndpoint).toBe(`http://${d.name}.${k.namespace()}.svc.cluster.local`);
    },
  );

  it("plan says what a deploy would change, checked by a server-side dry run, and writes nothing", async () => {
    const plan = async (env: NodeJS.ProcessEnv = {}) => {
      const r = await k.sb.run(scoped(k, "plan", GRAPH, "top", "--json"), { env });
      const doc = json<{ environments: { name: string; change: any }[] }>(r);
      return {
        code: r.code,
        by: Object.fromEntries(doc.environments.map((e) => [e.name, e.change])),
      };
    };
    const fresh = await plan();
    expect(fresh.code).toBe(0);
    expect(fresh.by.base).toMatchObject({ action: "create" });
    expect(fresh.by.base.writes).toContain(`Namespace ${k.namespace()}`);
    expect(await k.kube().get("Namespace", undefined, k.namespace())).toBeUndefined();

    expect((await deploy([GRAPH, "top"])).code).toBe(0);
    const same = await plan();
    expect(Object.values(same.by).map((c) => c.action)).toEqual([
      "unchanged",
      "unchanged",
      "unchanged",
    ]);

    const changed = await plan({ K8S_GREETING: "hola" });
    expect(changed.by.top).toMatchObject({ action: "update" });
    expect(changed.by.top.writes).toContain(`Deployment ${k.namespace()}/top`);
    expect(changed.by.base.action).toBe("unchanged");

    // A value the API server refuses: plan fails, naming the reason; nothing was written.
    const before = ((await k.kube().get("Deployment", k.namespace(), "top")) as any).metadata
      .generation;
    const refused = await plan({ K8S_NODE_POOL: "x".repeat(70) });
    expect(refused.code).toBe(1);
    expect(refused.by.top.error).toMatch(/nodeSelector|must be no more than 63/);
    expect(
      ((await k.kube().get("Deployment", k.namespace(), "top")) as any).metadata.generation,
    ).toBe(before);
  });

  it("changed code rolls only the app whose code changed", async () => {
    // A copy of the snapshot fixture (two apps, each in its own module) that the test edits;
    // inside the repo so "caravan" and "fastify" resolve (test/fixtures/snapshot/.tmp, ignored).
    const dir = join(fixture("snapshot/.tmp"), randomBytes(6).toString("hex"));
    mkdirSync(dir, { recursive: true });
    try {
      for (const f of ["main.ts", "a.ts", "b.ts"])
        copyFileSync(fixture(`snapshot/${f}`), join(dir, f));
      const main = join(dir, "main.ts");
      const first = await deploy([main]);
      expect(first.code, first.stderr).toBe(0);
      const generation = async (name: string) =>
        ((await k.kube().get("Deployment", k.namespace(), name)) as any).metadata.generation;
      const before = { a: await generation("snap-a"), b: await generation("snap-b") };

      const aFile = join(dir, "a.ts");
      writeFileSync(aFile, readFileSync(aFile, "utf8").replace('"a-v1"', '"a-v2"'));
      const second = await deploy([main]);
      expect(second.code, second.stderr).toBe(0);
      expect(statuses(second.deployments)).toEqual({ "snap-a": "ready", "snap-b": "unchanged" });
      expect(await generation("snap-a")).toBeGreaterThan(before.a);
      expect(await generation("snap-b")).toBe(before.b);
      // The new revision's pods mount the new bundle, which has the edit.
      const a = (await k.kube().get("Deployment", k.namespace(), "snap-a")) as any;
      const code = a.spec.template.spec.volumes.find((v: any) => v.name === "code").configMap.name;
      const map = (await k.kube().get("ConfigMap", k.namespace(), code)) as any;
      const bundle = Object.values(map.binaryData as Record<string, string>)
        .map((b) => Buffer.from(b, "base64").toString("utf8"))
        .join("\n");
      expect(bundle).toContain("a-v2");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("secrets live in the namespace's Secret, reach pods only by reference, and a changed one rolls the app", async () => {
    const app = fixture("kubernetes/secret-app.ts");
    const missing = await k.sb.run(scoped(k, "deploy", app, "--json"));
    expect(missing.code).toBe(1);
    expect(json<{ error: { code: string } }>(missing).error.code).toBe("MISSING_SECRET");
    expect(missing.stderr).toMatch(/API_KEY is not set/);
    // Refused before anything was applied: not even the namespace exists.
    expect(await k.kube().get("Namespace", undefined, k.namespace())).toBeUndefined();

    const setSecret = async (value: string) => {
      const file = join(k.sb.home, "value");
      writeFileSync(file, value);
      const r = await k.sb.run(scoped(k, "secret", "set", "API_KEY", "--file", file));
      expect(r.code, r.stderr).toBe(0);
    };
    await setSecret("s3cret-one");
    const listed = await k.sb.run(scoped(k, "secret", "list", "--json"));
    expect(listed.stdout).toContain("API_KEY");
    expect(listed.stdout).not.toContain("s3cret");

    const first = await deploy([app]);
    expect(first.code, first.stderr).toBe(0);
    const deployment = async () =>
      JSON.stringify(await k.kube().get("Deployment", k.namespace(), "vault"));
    expect(await deployment()).not.toContain("s3cret");
    const d = JSON.parse(await deployment());
    expect(d.spec.template.spec.containers[0].env).toContainEqual({
      name: "API_KEY",
      valueFrom: { secretKeyRef: { name: "caravan-secrets", key: "API_KEY" } },
    });
    const secret = (await k.kube().get("Secret", k.namespace(), "caravan-secrets")) as any;
    expect(Buffer.from(secret.data.API_KEY, "base64").toString()).toBe("s3cret-one");

    expect(statuses((await deploy([app])).deployments)).toEqual({ vault: "unchanged" });
    await setSecret("s3cret-two");
    const rolled = await deploy([app]);
    expect(statuses(rolled.deployments)).toEqual({ vault: "ready" });
    expect(rolled.by.vault!.revision).not.toBe(first.by.vault!.revision);
    expect(await deployment()).not.toContain("s3cret");

    const deleted = await k.sb.run(scoped(k, "secret", "delete", "API_KEY"));
    expect(deleted.code, deleted.stderr).toBe(0);
    expect((await k.sb.run(scoped(k, "secret", "list", "--json"))).stdout).not.toContain("API_KEY");
  });

  it("min < max gets an autoscaler that owns the count; a declared min of 0 is refused up front", async () => {
    const app = fixture("kubernetes/scaled.ts");
    const zero = await k.sb.run(scoped(k, "deploy", app, "--json"), { env: { K8S_MIN: "0" } });
    expect(zero.code).toBe(1);
    expect(zero.stderr).toMatch(/asks to scale to zero.*replicas: \[1, 4\]/);
    expect(await k.kube().get("Namespace", undefined, k.namespace())).toBeUndefined();

    const first = await deploy([app]);
    expect(first.code, first.stderr).toBe(0);
    const hpa = (await k.kube().get("HorizontalPodAutoscaler", k.namespace(), "elastic")) as any;
    expect(hpa.spec).toMatchObject({ minReplicas: 2, maxReplicas: 4 });
    const d = (await k.kube().get("Deployment", k.namespace(), "elastic")) as any;
    expect(d.spec.replicas).toBe(2);
    expect(d.status.availableReplicas).toBe(2);
    // caravan's own applies never own the count: the autoscaler's moves survive a redeploy.
    const owners = (d.metadata.managedFields as any[])
      .filter((f) => JSON.stringify(f.fieldsV1 ?? {}).includes('"f:replicas"'))
      .map((f) => f.manager);
    expect(owners).not.toContain("caravan");
    await k
      .kube()
      .call("PATCH", `/apis/apps/v1/namespaces/${k.namespace()}/deployments/elastic/scale`, {
        body: { spec: { replicas: 3 } },
        contentType: "application/merge-patch+json",
      });
    const again = await deploy([app], { K8S_GREETING: "hi" });
    expect(statuses(again.deployments)).toEqual({ elastic: "ready" });
    expect(
      ((await k.kube().get("Deployment", k.namespace(), "elastic")) as any).spec.replicas,
    ).toBe(3);
  });
});
