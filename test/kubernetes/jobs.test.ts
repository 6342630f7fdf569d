/**
 * Jobs (JobEnvironment) on the test cluster: a Job that must complete before its dependents
 * are applied, unchanged while its revision succeeded, rerun on demand, gone with delete.
 */
import { describe, expect, it } from "vitest";
import { fixture, json, type StatusJSON } from "../support.ts";
import { clusterAvailable, scoped, useKubeSandbox } from "./support.ts";

const FILE = fixture("kubernetes/jobs.ts");
const t = (iso: string) => Date.parse(iso);

describe.skipIf(!clusterAvailable())("jobs on a cluster", { timeout: 180_000 }, () => {
  const k = useKubeSandbox();
  const deploy = async (env: Record<string, string> = {}, ...args: string[]) => {
    const r = await k.sb.run(scoped(k, "deploy", FILE, ...args, "--json"), { env });
    const { deployments } = json<{
      deployments: { name: string; status: string; error?: string }[];
    }>(r);
    return { ...r, by: Object.fromEntries(deployments.map((d) => [d.name, d])) };
  };
  const jobs = async () =>
    (
      await k
        .kube()
        .list("Job", k.namespace(), "caravan.dev/environment=migrate,caravan.dev/kind=job")
    ).items as any[];

  it("a job's Job completes before its dependents are applied; unchanged after; rerun and failure", async () => {
    // The migration's pod runs 2 s: the app must not be created before it completed.
    const slow = { JOB_ANNOTATIONS: JSON.stringify({ "caravan.test/ready-after": "2" }) };
    const first = await deploy(slow);
    expect(first.code, first.stderr).toBe(0);
    expect(first.by.migrate!.status).toBe("ready");
    expect(first.by.api!.status).toBe("ready");
    const [job] = await jobs();
    expect(job.spec.backoffLimit).toBe(1);
    expect(job.spec.template.spec.restartPolicy).toBe("Never");
    // timeouts.run (600 s by default) bounds each attempt, as locally.
    expect(job.spec.template.spec.activeDeadlineSeconds).toBe(600);
    expect(job.spec.template.spec.containers[0].command).toEqual(["node", "migrate.mjs", "v1"]);
    const completed = t(job.status.completionTime);
    const api = await k.kube().get("Deployment", k.namespace(), "api");
    expect(t(api.metadata.creationTimestamp)).toBeGreaterThanOrEqual(completed);
    // A function job runs caravan's runtime in kind "job".
    const seedJob = (await k.kube().list("Job", k.namespace(), "caravan.dev/environment=seed"))
      .items[0] as any;
    const runtime = seedJob.spec.template.spec.containers[0].env.find(
      (e: { name: string }) => e.name === "CARAVAN_RUNTIME",
    );
    expect(JSON.parse(runtime.value).kind).toBe("job");

    const again = await deploy(slow);
    expect(again.code, again.stderr).toBe(0);
    expect(again.by.migrate!.status).toBe("unchanged");
    expect((await jobs()).map((j) => j.metadata.uid)).toEqual([job.metadata.uid]);

    const st = json<{ environments: (StatusJSON & { jobRuns: any[] })[] }>(
      await k.sb.run(scoped(k, "status", "--json")),
    ).environments.find((e) => e.name === "migrate")!;
    expect(st).toMatchObject({ kind: "job", state: "ready" });
    expect(st.jobRuns[0]).toMatchObject({ status: "succeeded" });

    const rerun = await k.sb.run(scoped(k, "job", "rerun", "migrate"));
    expect(rerun.code, rerun.stderr).toBe(0);
    expect(await jobs()).toHaveLength(2);

    // A new revision that fails: its dependents are skipped, with the pod's own words.
    const failing = await deploy({
      MIGRATION_ARG: "v2",
      JOB_ANNOTATIONS: JSON.stringify({
        "caravan.test/exit-code": "3",
        "caravan.test/termination-message": "migration 7 failed: column exists",
      }),
    });
    expect(failing.code).not.toBe(0);
    expect(failing.by.migrate!.status).toBe("failed");
    expect(failing.by.migrate!.error).toContain("migration 7 failed: column exists");
    expect(failing.by.seed!.status).toBe("skipped");
    expect(failing.by.api!.status).toBe("skipped");

    const deleted = await k.sb.run(scoped(k, "delete", "migrate", "--cascade"));
    expect(deleted.code, deleted.stderr).toBe(0);
    expect(await jobs()).toEqual([]);
  });
});
