/**
 * Bounded runs: a task's output past 16 MiB fails its run with the size and the limit, and
 * so do arguments past 1 MiB sent to the run API; `runs` lists runs without their outputs
 * (`runs show` has them); `runs delete` and `runs prune` forget finished runs.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { RunRecord } from "../src/backends/contract.ts";
import { useSandbox } from "./helpers.ts";
import { fixture, json } from "./support.ts";

const BIG = fixture("tasks/big.ts");
const MiB = 1024 * 1024;

describe("run sizes and records", () => {
  const sb = useSandbox();

  it("bounds outputs and arguments, lists runs without outputs, deletes and prunes runs", async () => {
    const tooBig = await sb.run(["run", BIG, "sized", "--args", "[20]", "--json"]);
    expect(tooBig.code, tooBig.stderr).toBe(1);
    const failed = json<{ run: RunRecord }>(tooBig).run;
    expect(failed).toMatchObject({
      status: "failed",
      error: {
        name: "OutputTooLarge",
        message:
          "the result of big-env.sized is 20.0 MiB as JSON, more than the 16.0 MiB a run may return; store large results elsewhere (a file, an object store) and return where they are",
      },
    });
    expect(failed).not.toHaveProperty("output");

    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const r = await sb.run(["run", BIG, "sized", "--args", "[8]", "--json"]);
      expect(r.code, r.stderr).toBe(0);
      ids.push(json<{ run: RunRecord }>(r).run.id);
    }

    // The list has no outputs; one run has its own.
    const list = await sb.run(["runs", "--json"]);
    expect(list.code, list.stderr).toBe(0);
    const runs = json<{ runs: RunRecord[] }>(list).runs;
    expect(runs.map((r) => r.id)).toEqual([...ids].reverse().concat(failed.id));
    for (const r of runs) expect(r).not.toHaveProperty("output");
    expect(list.stdout.length).toBeLessThan(64 * 1024);
    const show = await sb.run(["runs", "show", ids[0]!, "--json"]);
    expect(show.code, show.stderr).toBe(0);
    expect((json<{ run: RunRecord }>(show).run.output as string).length).toBe(8 * MiB);

    // Arguments past 1 MiB, from a client that does not check them itself.
    const daemon = JSON.parse(readFileSync(join(sb.home, "daemon.json"), "utf8")) as {
      url: string;
    };
    const token = readFileSync(join(sb.home, "token"), "utf8").trim();
    const post = async (bytes: number) => {
      const res = await fetch(`${daemon.url}/v1/runs`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({
          scope: { project: "default", domain: "development" },
          task: "big-env.measure",
          args: ["a".repeat(bytes)],
        }),
      });
      return { status: res.status, body: (await res.json()) as { error: { message: string } } };
    };
    const over = await post(MiB + 1000);
    expect(over.status).toBe(400);
    expect(over.body.error.message).toBe(
      "run big-env.measure: its arguments are 1.0 MiB as JSON, more than the 1.0 MiB a run takes; pass large data by reference (a file path, a URL, an object key) and read it in the task",
    );
    const far = await post(3 * MiB);
    expect(far.status).toBe(413);
    expect(far.body.error.message).toMatch(
      /^this run request is \d+ bytes; a run's arguments are at most 1048576 bytes as JSON/,
    );
    const fits = await post(MiB - 100);
    expect(fits.status).toBe(201);

    // Forgetting runs.
    const del = await sb.run(["runs", "delete", ids[0]!]);
    expect(del.code, del.stderr).toBe(0);
    expect(del.stderr).toContain(`deleted ${ids[0]}`);
    const gone = await sb.run(["runs", "show", ids[0]!]);
    expect(gone.code).toBe(1);
    expect(gone.stderr).toContain(`no run "${ids[0]}"`);
    const usage = await sb.run(["runs", "prune"]);
    expect(usage.code).toBe(2);
    expect(usage.stderr).toContain("--older-than <age> and/or --keep <n>");
    const badAge = await sb.run(["runs", "prune", "--older-than", "a week"]);
    expect(badAge.code).toBe(2);
    expect(badAge.stderr).toContain("--older-than takes an age like 7d, 12h, 30m or 90s");
    const prune = await sb.run(["runs", "prune", "--keep", "1", "--json"]);
    expect(prune.code, prune.stderr).toBe(0);
    expect(json<{ deleted: string[] }>(prune).deleted).toHaveLength(3);
    const left = json<{ runs: RunRecord[] }>(await sb.run(["runs", "--json"])).runs;
    expect(left).toHaveLength(1);
    const none = await sb.run(["runs", "prune", "--older-than", "0s"]);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stderr).toContain("deleted 1 run");
  });
});
