/**
 * Task environments and runs on the kubernetes backend, against the test cluster (pods
 * simulated by kwok: caravan.test/* pod annotations say how a Job's pod ends, see
 * scripts/kube-test/README.md). A task environment is ready once a registration Job loaded its
 * code; a run is one Job whose outcome is the pod's termination message; a finished run's
 * result outlives its Job.
 */
import { describe, expect, it } from "vitest";
import { eventually } from "../helpers.ts";
import { fixture, json, statuses, type DeploymentJSON } from "../support.ts";
import { clusterAvailable, scoped, useKubeSandbox } from "./support.ts";

const REGISTRATION = fixture("kubernetes/registration.ts");
const TASKS = fixture("kubernetes/tasks.ts");
const t = (iso: string) => Date.parse(iso);

describe.skipIf(!clusterAvailable())("kubernetes task environments", { timeout: 180_000 }, () => {
  const k = useKubeSandbox();

  async function deploy(args: string[], env: NodeJS.ProcessEnv = {}) {
    const r = await k.sb.run(scoped(k, "deploy", ...args, "--json"), { env });
    const { deployments } = json<{ deployments: DeploymentJSON[] }>(r);
    return { ...r, by: Object.fromEntries(deployments.map((d) => [d.name, d])), deployments };
  }
  async function status(): Promise<Record<string, any>> {
    const r = await k.sb.run(scoped(k, "status", "--json"));
    expect(r.code, r.stderr).toBe(0);
    return Object.fromEntries(
      json<{ environments: any[] }>(r).environments.map((e) => [e.name, e]),
    );
  }
  const registrations = async () =>
    (await k.kube().list<any>("Job", k.namespace(), "caravan.dev/registration")).items;

  it("a task environment is ready once its registration Job completed, its dependent app created only then; an unchanged redeploy runs no second Job", async () => {
    const r = await deploy([REGISTRATION], { K8S_REGISTER_AFTER: "2" });
    expect(r.code, r.stderr).toBe(0);
    expect(statuses(r.deployments)).toEqual({ prep: "ready", consumer: "ready" });

    const [job, ...more] = await registrations();
    expect(more).toEqual([]);
    expect(job.metadata.name).toBe(`prep-register-${r.by.prep!.revision!.slice(0, 10)}`);
    expect(job.metadata.labels).toMatchObject({
      "app.kubernetes.io/managed-by": "caravan",
      "caravan.dev/project": k.project(),
      "caravan.dev/environment": "prep",
    });
    expect(job.spec).toMatchObject({
      backoffLimit: 0,
      ttlSecondsAfterFinished: expect.any(Number),
    });
    expect(job.status.conditions).toContainEqual(
      expect.objectContaining({ type: "Complete", status: "True" }),
    );
    const container = job.spec.template.spec.containers[0];
    const runtime = JSON.parse(container.env.find((e: any) => e.name === "CARAVAN_RUNTIME").value);
    expect(runtime).toMatchObject({ kind: "register", name: "prep", tasks: ["prep.clean"] });
    // The same code and runtime a run mounts: the marker's.
    const marker = (await k.kube().get<any>("ConfigMap", k.namespace(), "prep-tasks"))!;
    const volumes = Object.fromEntries(
      job.spec.template.spec.volumes.map((v: any) => [v.name, v.configMap.name]),
    );
    expect(volumes).toEqual({ code: marker.data.code, runtime: marker.data.runtime });
    expect(marker.metadata.annotations["caravan.dev/registration"]).toBe("ready");

    // The registration took its simulated 2 s, and the app was created only after it ended.
    const consumer = (await k.kube().get<any>("Deployment", k.namespace(), "consumer"))!;
    expect(t(job.status.completionTime) - t(job.status.startTime)).toBeGreaterThanOrEqual(1000);
    expect(t(consumer.metadata.creationTimestamp)).toBeGreaterThanOrEqual(
      t(job.status.completionTime),
    );

    expect((await status()).prep).toMatchObject({ kind: "task", state: "ready" });
    // A registration is not a run.
    const runs = await k.sb.run(scoped(k, "runs", "--json"));
    expect(json<{ runs: unknown[] }>(runs).runs).toEqual([]);

    const again = await deploy([REGISTRATION], { K8S_REGISTER_AFTER: "2" });
    expect(statuses(again.deployments)).toEqual({ prep: "unchanged", consumer: "unchanged" });
    const after = await registrations();
    expect(after.map((j: any) => j.metadata.uid)).toEqual([job.metadata.uid]);
  });

  it("a failed registration fails the deploy with its reason, skips the dependent app and shows in status; a redeploy registers again", async () => {
    const missing =
      'task environment "prep" registers no task "prep.clean" when its code loads here';
    const failing = { K8S_REGISTER_ERROR: missing };
    const r = await deploy([REGISTRATION], failing);
    expect(r.code).toBe(1);
    expect(statuses(r.deployments)).toEqual({ prep: "failed", consumer: "skipped" });
    expect(r.by.prep!.error).toContain('task environment "prep" could not register its tasks');
    expect(r.by.prep!.error).toContain(`MissingTask: ${missing}`);
    expect(await k.kube().get("Deployment", k.namespace(), "consumer")).toBeUndefined();

    const envs = await status();
    expect(envs.prep).toMatchObject({ kind: "task", state: "failed" });
    expect(envs.prep.error).toContain(missing);

    // Not unchanged: the same failing revision registers again (a new Job of the same name).
    const [first] = await registrations();
    const again = await deploy([REGISTRATION], failing);
    expect(statuses(again.deployments)).toEqual({ prep: "failed", consumer: "skipped" });
    const [second] = await registrations();
    expect(second.metadata.name).toBe(first.metadata.name);
    expect(second.metadata.uid).not.toBe(first.metadata.uid);

    // Fixed: the environment registers, the app follows.
    const fixed = await deploy([REGISTRATION]);
    expect(fixed.code, fixed.stderr).toBe(0);
    expect(statuses(fixed.deployments)).toEqual({ prep: "ready", consumer: "ready" });
    expect((await status()).prep).toMatchObject({ state: "ready" });
    expect((await status()).prep.error).toBeUndefined();
  });

  it("a task run is one Job; its outcome comes back from the pod's termination message", async () => {
    const file = TASKS;
    const run = (annotations: Record<string, string>, retries = "2") =>
      k.sb.run(scoped(k, "run", file, "training-env.train", "--args", "[3]", "--json"), {
        env: { K8S_RUN_ANNOTATIONS: JSON.stringify(annotations), K8S_RETRIES: retries },
      });
    const ok = await run({
      "caravan.test/termination-message": JSON.stringify({ ok: true, output: { epochs: 3 } }),
    });
    expect(ok.code, ok.stderr).toBe(0);
    const record = json<{ run: any }>(ok).run;
    expect(record).toMatchObject({ status: "succeeded", task: "training-env.train", args: [3] });
    expect(record.output).toEqual({ epochs: 3 });
    const [namespace, name] = record.id.split("/");
    expect(namespace).toBe(k.namespace());
    const job = (await k.kube().get("Job", namespace, name)) as any;
    expect(job.spec).toMatchObject({ backoffLimit: 2, activeDeadlineSeconds: 30 });
    const runtime = JSON.parse(
      job.spec.template.spec.containers[0].env.find((e: any) => e.name === "CARAVAN_RUNTIME").value,
    );
    expect(runtime).toMatchObject({ kind: "run", task: "training-env.train", args: [3] });
    // A task may run other tasks: the run API's URL, and its token by reference.
    const env = job.spec.template.spec.containers[0].env as any[];
    expect(env.find((e) => e.name === "CARAVAN_API_URL").value).toBe(
      `http://caravan-gateway.${namespace}.svc.cluster.local:8021`,
    );
    expect(env.find((e) => e.name === "CARAVAN_API_TOKEN").valueFrom.secretKeyRef).toEqual({
      name: "caravan-gateway",
      key: "run-token",
    });

    const failed = await run(
      {
        "caravan.test/exit-code": "1",
        "caravan.test/termination-message": JSON.stringify({
          ok: false,
          error: {
            name: "ValueError",
            message: "bad epochs",
            stack: "ValueError: bad epochs\n    at train",
          },
        }),
      },
      "0",
    ); // no retries: one failed pod ends the run
    expect(failed.code).toBe(1);
    expect(failed.stderr).toMatch(/training-env.train failed.*ValueError: bad epochs/);

    const runs = await k.sb.run(scoped(k, "runs", "--json"));
    expect(runs.code, runs.stderr).toBe(0);
    const listed = json<{ runs: any[] }>(runs).runs;
    expect(listed.map((r) => r.status)).toEqual(["failed", "succeeded"]);
    const shown = await k.sb.run(scoped(k, "runs", "show", record.id, "--json"));
    expect(json<{ run: any }>(shown).run.output).toEqual({ epochs: 3 });
  });

  it("a finished run's result outlives its Job: runs and runs show read it back; deleting the environment removes it", async () => {
    const outcome = { ok: true, output: { epochs: 3 } };
    const ran = await k.sb.run(
      scoped(k, "run", TASKS, "training-env.train", "--args", "[3]", "--json"),
      {
        env: {
          K8S_RUN_ANNOTATIONS: JSON.stringify({
            "caravan.test/termination-message": JSON.stringify(outcome),
          }),
        },
      },
    );
    expect(ran.code, ran.stderr).toBe(0);
    const record = json<{ run: any }>(ran).run;
    const [namespace, name] = record.id.split("/");
    const kept = (await k.kube().get<any>("ConfigMap", namespace, `${name}-result`))!;
    expect(kept.metadata.labels).toMatchObject({
      "caravan.dev/environment": "training-env",
      "caravan.dev/run": name,
    });

    // What the TTL controller does after RUN_RETENTION_SECONDS.
    await k.kube().delete("Job", namespace, name);
    await eventually(async () => !(await k.kube().get("Job", namespace, name)), 30_000, 100);

    const listed = await k.sb.run(scoped(k, "runs", "--json"));
    expect(listed.code, listed.stderr).toBe(0);
    const runs = json<{ runs: any[] }>(listed).runs;
    expect(runs).toHaveLength(1);
    expect(runs[0]).toMatchObject({
      id: record.id,
      task: "training-env.train",
      status: "succeeded",
      args: [3],
    });
    // A list leaves outputs out (runs show has them).
    expect(runs[0].output).toBeUndefined();
    const shown = await k.sb.run(scoped(k, "runs", "show", record.id, "--json"));
    expect(shown.code, shown.stderr).toBe(0);
    expect(json<{ run: any }>(shown).run).toMatchObject({
      id: record.id,
      status: "succeeded",
      output: { epochs: 3 },
      createdAt: record.createdAt,
    });

    const deleted = await k.sb.run(scoped(k, "delete", "training-env"));
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(await k.kube().get("ConfigMap", namespace, `${name}-result`)).toBeUndefined();
    const gone = await k.sb.run(scoped(k, "runs", "show", record.id, "--json"));
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain("NO_SUCH_RUN");
  });
});
