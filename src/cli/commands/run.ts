import type { Command } from "commander";
import type { RunRecord } from "../../backends/contract.ts";
import { CaravanError, isCaravanError } from "../../errors.ts";
import type { Task } from "../../sdk/environment.ts";
import type { CommandContext } from "../main.ts";
import { color, info, printJSON, printTable, reportError, wholeNumber } from "../output.ts";
import { loadProject, loadScope, openBackend, scopeOptions, type ScopeFlags } from "../project.ts";

export function registerRun(program: Command, ctx: CommandContext): void {
  scopeOptions(
    program
      .command("run")
      .description(
        "Run a task in a worker of its environment (deployed first if it changed) and print its output.",
      )
      .argument("<file>", "TypeScript file that declares the task")
      .argument("<task>", "the task: its id (training-env.train) or its name (train)")
      .option(
        "--input <name=value...>",
        'an argument by parameter name; the value is JSON if it parses (3, [1,2], "x"), else a string',
      )
      .option("--args <json>", "all arguments as a JSON array, e.g. '[3, {\"lr\": 0.1}]'")
      .option("--json", "print the run record as JSON on stdout")
      .addHelpText(
        "after",
        `
Examples:
  $ npx caravan run examples/task-env-dependency.ts train --input points='[[1,2],[2,4]]'
  $ npx caravan run jobs.ts training-env.train --args '[3]' --json`,
      ),
  ).action(
    async (
      file: string,
      taskName: string,
      opts: ScopeFlags & { input?: string[]; args?: string; json?: boolean },
    ) => {
      const project = await loadProject(file, [], opts);
      const task = await findTask(project.environments, taskName, file);
      const args = argumentsOf(task, opts);
      const { runTask } = await import("../../runs.ts");
      let record: RunRecord;
      try {
        record = await runTask(task, args, {
          config: project.config,
          caller: "cli",
          onStart: (r) => info(color.dim(`${r.id}: running ${r.task}`)),
        });
      } catch (e) {
        const run = isCaravanError(e) ? (e.details.runId as string | undefined) : undefined;
        if (!run || !isCaravanError(e)) throw e;
        // A failed run: its record (JSON) or the task's error and stack (stderr); exit 1.
        ctx.exitCode = 1;
        if (opts.json) {
          const backend = await openBackend(project.config);
          printJSON({ run: await backend.getRun!(run), error: e.toJSON() });
          await backend.close();
        }
        reportError(e);
        const stack = (e.details.error as { stack?: string } | undefined)?.stack;
        if (stack) info(color.dim(stack));
        return;
      }
      if (opts.json) return printJSON({ run: record });
      const out = record.output;
      process.stdout.write(
        (typeof out === "string" ? out : JSON.stringify(out ?? null, null, 2)) + "\n",
      );
      info(
        color.green(
          `${record.task} succeeded in ${record.durationMs} ms (${record.id}${record.attempts > 1 ? `, ${record.attempts} attempts` : ""})`,
        ),
      );
    },
  );

  const runs = program
    .command("runs")
    .description("Task runs: list them, or show one (inputs, output or error, attempts, logs).");
  scopeOptions(
    runs
      .command("list", { isDefault: true })
      .description("Recent runs, newest first")
      .option("--task <id>", "only runs of this task (training-env.train)")
      .option("--status <status>", "only runs in this state: queued, running, succeeded, failed")
      .option("--limit <n>", "at most this many", wholeNumber("--limit", 1), 50)
      .option("--all", "every project and domain, not just the current one")
      .option("--json", "print JSON on stdout"),
  ).action(
    async (
      opts: ScopeFlags & {
        task?: string;
        status?: string;
        limit: number;
        all?: boolean;
        json?: boolean;
      },
    ) => {
      const statuses = ["queued", "running", "succeeded", "failed"];
      if (opts.status && !statuses.includes(opts.status))
        throw new CaravanError(
          "USAGE",
          `--status must be one of ${statuses.join(", ")}, got ${JSON.stringify(opts.status)}`,
        );
      const config = await loadScope(opts);
      const backend = await openBackend(config);
      const list = await backend.listRuns!(opts.all ? undefined : config, {
        ...(opts.task ? { task: opts.task } : {}),
        ...(opts.status ? { status: opts.status as RunRecord["status"] } : {}),
        limit: opts.limit,
      });
      await backend.close();
      if (opts.json)
        return printJSON({
          runs: list.map(({ logs: _logs, output: _output, ...r }) => ({
            ...r,
            startedAt: r.startedAt ?? null,
            durationMs: r.durationMs ?? null,
          })),
        });
      if (!list.length) {
        info("no runs yet (caravan run <file> <task> starts one)");
        return;
      }
      const rows = list.map((r) => [
        r.id,
        r.task,
        r.status,
        r.startedAt ?? r.createdAt,
        r.durationMs === undefined ? "-" : `${r.durationMs} ms`,
        String(r.attempts),
      ]);
      printTable(["ID", "TASK", "STATUS", "STARTED", "DURATION", "ATTEMPTS"], rows);
    },
  );
  scopeOptions(
    runs
      .command("show")
      .description("One run: inputs, output or error (with the task's stack), attempts and logs")
      .argument("<id>", "the run's id (run-…)")
      .option("--json", "print JSON on stdout"),
  ).action(async (id: string, opts: ScopeFlags & { json?: boolean }) => {
    const backend = await openBackend(await loadScope(opts));
    const r = await backend.getRun!(id);
    await backend.close();
    if (opts.json) return printJSON({ run: r });
    const line = (k: string, v: string) =>
      process.stdout.write(`${color.bold(k.padEnd(10))} ${v}\n`);
    line("id", r.id);
    line("task", `${r.task} (${r.project}/${r.domain}, revision ${r.revision})`);
    line("status", r.status);
    line("attempts", String(r.attempts));
    line("created", r.createdAt);
    if (r.startedAt) line("started", r.startedAt);
    if (r.durationMs !== undefined) line("duration", `${r.durationMs} ms`);
    if (r.caller) line("caller", r.caller);
    line("inputs", JSON.stringify(r.args));
    if (r.status === "succeeded") line("output", JSON.stringify(r.output, null, 2));
    if (r.error) {
      line("error", `${r.error.name}: ${r.error.message}`);
      if (r.error.stack) process.stdout.write(color.dim(r.error.stack) + "\n");
    }
    if (r.logs) process.stdout.write(`${color.bold("logs")}\n${r.logs.trimEnd()}\n`);
  });
  scopeOptions(
    runs
      .command("delete")
      .description("Delete finished runs' records (output and logs included)")
      .argument("<id...>", "the runs' ids (run-…)")
      .option("--json", "print JSON on stdout"),
  ).action(async (ids: string[], opts: ScopeFlags & { json?: boolean }) => {
    const config = await loadScope(opts);
    const backend = await openBackend(config);
    try {
      if (!backend.deleteRun)
        throw (await import("../../backends/registry.ts")).unsupported(
          config.backend,
          "caravan runs delete",
          "its runs are kept by the cluster",
        );
      for (const id of ids) {
        await backend.deleteRun(id);
        if (!opts.json) info(`deleted ${id}`);
      }
    } finally {
      await backend.close();
    }
    if (opts.json) printJSON({ deleted: ids });
  });
  scopeOptions(
    runs
      .command("prune")
      .description(
        "Delete finished runs older than --older-than and/or beyond the newest --keep (per project/domain)",
      )
      .option("--older-than <age>", "e.g. 7d, 12h, 30m, 90s", durationMs("--older-than"))
      .option("--keep <n>", "keep the newest n finished runs", wholeNumber("--keep", 0))
      .option("--all", "every project and domain, not just the current one")
      .option("--json", "print JSON on stdout")
      .addHelpText(
        "after",
        `
Queued and running runs are never pruned. Without these, runs are kept by the retention
policy: per project/domain the newest 1000 finished runs, none older than 30 days, and
older ones go once the newer ones' outputs and logs add up to 1 GiB.

Examples:
  $ npx caravan runs prune --older-than 7d
  $ npx caravan runs prune --keep 10 --all`,
      ),
  ).action(
    async (
      opts: ScopeFlags & { olderThan?: number; keep?: number; all?: boolean; json?: boolean },
    ) => {
      if (opts.olderThan === undefined && opts.keep === undefined)
        throw new CaravanError(
          "USAGE",
          "say which runs to prune: --older-than <age> and/or --keep <n>",
        );
      const config = await loadScope(opts);
      const backend = await openBackend(config);
      let deleted: string[];
      try {
        if (!backend.pruneRuns)
          throw (await import("../../backends/registry.ts")).unsupported(
            config.backend,
            "caravan runs prune",
            "its runs are kept by the cluster",
          );
        deleted = await backend.pruneRuns(opts.all ? undefined : config, {
          ...(opts.olderThan !== undefined ? { olderThanMs: opts.olderThan } : {}),
          ...(opts.keep !== undefined ? { keep: opts.keep } : {}),
        });
      } finally {
        await backend.close();
      }
      if (opts.json) return printJSON({ deleted });
      info(`deleted ${deleted.length} run${deleted.length === 1 ? "" : "s"}`);
    },
  );
}

/** `7d`, `12h`, `30m`, `90s` (or a number of seconds), in milliseconds. */
function durationMs(flag: string): (value: string) => number {
  const unit: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };
  return (value) => {
    const m = /^(\d+)([smhd]?)$/.exec(value.trim());
    if (!m)
      throw new CaravanError(
        "USAGE",
        `${flag} takes an age like 7d, 12h, 30m or 90s, got ${JSON.stringify(value)}`,
      );
    return Number(m[1]) * unit[m[2] || "s"]!;
  };
}

/** The task named on the command line, by id or by (unique) name. */
async function findTask(
  environments: unknown[],
  name: string,
  file: string,
): Promise<Task<any[], any>> {
  const { isTaskEnvironment } = await import("../../sdk/environment.ts");
  const tasks = environments.filter(isTaskEnvironment).flatMap((env) => [...env.tasks.values()]);
  const found = tasks.filter((t) => t.id === name || t.taskName === name);
  if (found.length === 1) return found[0]!;
  const ids = tasks.map((t) => t.id);
  if (found.length > 1) {
    throw new CaravanError(
      "USAGE",
      `"${name}" names ${found.length} tasks in ${file}: ${found.map((t) => t.id).join(", ")}; give the full id`,
    );
  }
  throw new CaravanError(
    "UNKNOWN_TASK",
    `${file} declares no task "${name}"; ${ids.length ? `its tasks: ${ids.join(", ")}` : "it declares no tasks (TaskEnvironment.task(fn) declares one)"}`,
    { task: name, known: ids },
  );
}

/**
 * The task's arguments from `--args` (a JSON array) or `--input name=value` (by parameter
 * name; a task with one destructured or unnamed parameter gets them as one object).
 */
function argumentsOf(task: Task<any[], any>, opts: { input?: string[]; args?: string }): unknown[] {
  if (opts.args !== undefined) {
    if (opts.input?.length)
      throw new CaravanError("USAGE", "give the arguments with --args or with --input, not both");
    let parsed: unknown;
    try {
      parsed = JSON.parse(opts.args);
    } catch (e) {
      throw new CaravanError("USAGE", `--args is not JSON: ${(e as Error).message}`);
    }
    return Array.isArray(parsed) ? parsed : [parsed];
  }
  const values: Record<string, unknown> = {};
  for (const pair of opts.input ?? []) {
    const eq = pair.indexOf("=");
    if (eq <= 0)
      throw new CaravanError("USAGE", `--input ${JSON.stringify(pair)}: expected name=value`);
    const raw = pair.slice(eq + 1);
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      /* not JSON: the string itself */
    }
    values[pair.slice(0, eq)] = value;
  }
  const keys = Object.keys(values);
  if (!keys.length) return [];
  const params = task.parameters;
  if (keys.every((k) => params.includes(k))) {
    const last = Math.max(...keys.map((k) => params.indexOf(k)));
    const before = params.slice(0, last).map((p, i) => p ?? `parameter ${i + 1}`);
    const missing = before.filter((p) => !keys.includes(p));
    if (missing.length) {
      // JSON has no "missing": a skipped parameter would arrive as null, defeating its default.
      throw new CaravanError(
        "USAGE",
        `${task.id}: --input gives ${params[last]} but not ${missing.join(", ")}, which come${missing.length === 1 ? "s" : ""} before it; give ${missing.length === 1 ? "it" : "them"} too (or pass --args '[...]')`,
      );
    }
    return params.slice(0, last + 1).map((p) => values[p!]);
  }
  if (params.length <= 1 && params[0] === undefined) return [values];
  const unknown = keys.filter((k) => !params.includes(k));
  const named = params.filter((p) => p !== undefined);
  throw new CaravanError(
    "USAGE",
    `${task.id} has no parameter ${unknown.map((k) => `"${k}"`).join(", ")}; ${named.length ? `its parameters: ${named.join(", ")}` : "it takes no named parameters"} (or pass --args '[...]')`,
  );
}
