/**
 * Jobs on this machine (JobEnvironment): one-shot processes a deploy waits for. A job is ready
 * once an attempt exited 0 (a function job: its function resolved); it is tried `1 + retries`
 * times, each attempt recorded (status, exit code, duration) and writing to the job's log.
 * Whether to run at all is the control plane's call (a job whose revision already succeeded
 * is unchanged); this runs it.
 */
import { CaravanError } from "../../errors.ts";
import type { DeployResult, JobSpec } from "../contract.ts";
import { keyOf, type EnvironmentRow, type Store } from "./store.ts";
import { indent, runOnce, type AppProcess, type LaunchSpec } from "./supervisor.ts";

export interface JobRunnerDeps {
  store: Store;
  /** How to start a process of `row` (as for an app, without a port). */
  launchSpec(row: EnvironmentRow): LaunchSpec;
  /** False once the control plane is shutting down: no new attempt starts. */
  accepting(): boolean;
}

export class JobRunner {
  /** The attempt running now, by environment key. */
  private readonly running = new Map<string, AppProcess>();
  /** Jobs being stopped or deleted: their attempt is killed and no other one starts. */
  private readonly cancelled = new Set<string>();

  constructor(private readonly deps: JobRunnerDeps) {}

  /** Runs `row`'s job; resolves once an attempt succeeded, rejects (JOB_FAILED) when none did. */
  async run(row: EnvironmentRow): Promise<DeployResult> {
    const { store } = this.deps;
    const spec = row.request.spec as JobSpec;
    const key = keyOf(row, row.name);
    store.upsert({ ...row, state: "starting", error: null });
    const attempts = 1 + spec.retries;
    let failure = "";
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (!this.deps.accepting() || this.cancelled.has(key)) {
        failure = `${row.name} was stopped before it finished`;
        break;
      }
      const id = store.startJobRun(row, row.name, row.revision, attempt);
      let why: string;
      let tail = "";
      let exitCode: number | null = null;
      try {
        const outcome = await runOnce(
          this.deps.launchSpec(row),
          spec.timeouts.run * 1000,
          (proc) => {
            this.running.set(key, proc);
            // Stopped while it was being spawned: it ends at once.
            if (this.cancelled.has(key)) void proc.stop(2000);
            store.addProcessOf(row, proc, 0);
          },
        );
        tail = outcome.tail;
        exitCode = outcome.code;
        if (outcome.code === 0 && !outcome.timedOut) {
          store.finishJobRun(id, { status: "succeeded", exitCode: 0 });
          store.event(row, row.name, "job-succeeded", `attempt ${attempt}`);
          store.upsert({ ...row, state: "ready", error: null });
          return { status: "ready", revision: row.revision };
        }
        why = this.cancelled.has(key)
          ? "was stopped"
          : outcome.timedOut
            ? `ran longer than ${spec.timeouts.run} s (timeouts.run) and was stopped`
            : outcome.signal
              ? `was killed by ${outcome.signal}`
              : `exited with code ${outcome.code}`;
      } catch (e) {
        why = (e as Error).message;
      } finally {
        const proc = this.running.get(key);
        if (proc) store.removeProcess(proc.pid, proc.startTime);
        this.running.delete(key);
      }
      store.finishJobRun(id, { status: "failed", exitCode, error: why });
      store.event(row, row.name, "job-failed", `attempt ${attempt}: ${why}`);
      const tried = attempts > 1 ? ` (attempt ${attempt} of ${attempts})` : "";
      failure = `job ${row.name} ${why}${tried}${tail ? `; last lines of its log:\n${indent(tail)}` : ""}`;
    }
    store.setState(row, row.name, "failed", failure);
    throw new CaravanError("JOB_FAILED", failure, { job: row.name });
  }

  /**
   * Stops the attempt running for `key`, if any (stop, delete): no further attempt starts
   * until `allow(key)` (called once the stop or delete is done).
   */
  async cancel(key: string): Promise<void> {
    this.cancelled.add(key);
    await this.running.get(key)?.stop(2000);
  }

  allow(key: string): void {
    this.cancelled.delete(key);
  }

  /** Shutdown: every running attempt is stopped (a new control plane marks them interrupted). */
  async cancelAll(): Promise<void> {
    await Promise.all([...this.running.keys()].map((key) => this.cancel(key)));
  }

  pids(key: string): number[] {
    const proc = this.running.get(key);
    return proc ? [proc.pid] : [];
  }

  /**
   * After a control plane died: attempts it left running are failed (their processes are
   * stopped as strays), and so are the jobs they belonged to.
   */
  recover(): void {
    const { store } = this.deps;
    store.interruptJobRuns();
    for (const row of store.list()) {
      if (row.kind === "job" && row.state === "starting")
        store.setState(
          row,
          row.name,
          "failed",
          "interrupted: the control plane stopped while it ran; deploy again, or caravan job rerun",
        );
    }
  }
}
