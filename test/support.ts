/**
 * Helpers shared by the semantics tests (on top of the harness in helpers.ts): fixture paths,
 * the JSON documents of `deploy --json` and `status --json`, the events fixture apps record,
 * and the processes of one app.
 */
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { expect } from "vitest";
import { readEvents, type AppEvent } from "./fixtures/shared/events.ts";
import { ROOT, type CliResult, type Sandbox } from "./helpers.ts";
import { homeMark } from "./processes.ts";

export const fixture = (path: string) => join(ROOT, "test/fixtures", path);

export interface DeploymentJSON {
  name: string;
  kind: "app" | "task";
  status: "ready" | "unchanged" | "failed" | "skipped";
  revision: string | null;
  endpoint: string | null;
  internalEndpoint: string | null;
  error: string | null;
}

export interface StatusJSON {
  name: string;
  kind: "app" | "task";
  state: string;
  revision: string;
  endpoint: string | null;
  internalEndpoint: string | null;
  restarts: number;
  pids: number[];
  instances: { id: string; ready: boolean; pid?: number; restarts?: number; node?: string }[];
  project: string;
  domain: string;
  error?: string;
  listensBeyondLoopback?: string[];
}

/** Parses a `--json` command's stdout, failing with its stderr when it is not JSON. */
export function json<T>(r: CliResult): T {
  try {
    return JSON.parse(r.stdout) as T;
  } catch {
    throw new Error(`not JSON (exit ${r.code}):\n${r.stdout}\n--- stderr ---\n${r.stderr}`);
  }
}

/** `caravan deploy <args> --json`. */
export async function deploy(
  sb: Sandbox,
  args: string[],
  env: NodeJS.ProcessEnv = {},
): Promise<CliResult & { deployments: DeploymentJSON[]; by: Record<string, DeploymentJSON> }> {
  const r = await sb.run(["deploy", ...args, "--json"], { env });
  const { deployments } = json<{ deployments: DeploymentJSON[] }>(r);
  return { ...r, deployments, by: byName(deployments) };
}

/** `caravan status <args> --json`, by name. */
export async function status(
  sb: Sandbox,
  args: string[] = [],
): Promise<Record<string, StatusJSON>> {
  const r = await sb.run(["status", ...args, "--json"]);
  expect(r.code, r.stderr).toBe(0);
  return byName(json<{ environments: StatusJSON[] }>(r).environments);
}

/** `{ name: status }` of a deploy's results, for assertions that do not depend on order. */
export function statuses(deployments: DeploymentJSON[]): Record<string, string> {
  return Object.fromEntries(deployments.map((d) => [d.name, d.status]));
}

export function byName<T extends { name: string }>(list: T[]): Record<string, T> {
  return Object.fromEntries(list.map((x) => [x.name, x]));
}

export function pidsOf(envs: Record<string, { pids: number[] }>): Record<string, number[]> {
  return Object.fromEntries(Object.entries(envs).map(([n, e]) => [n, e.pids]));
}

/** Where fixture apps record their events (handed to them as EVENTS_FILE). */
export const eventsFile = (sb: Sandbox) => join(sb.home, "events.jsonl");

export function events(sb: Sandbox): AppEvent[] {
  return readEvents(eventsFile(sb));
}

/** Time of an app's event; fails the test when the app never recorded it. */
export function timeOf(list: AppEvent[], app: string, event: string): number {
  const found = list.find((e) => e.app === app && e.event === event);
  if (!found) throw new Error(`${app} never recorded "${event}"; events: ${JSON.stringify(list)}`);
  return found.t;
}

/** Live processes started for `app` under this sandbox's CARAVAN_HOME. */
export function appProcesses(sb: Sandbox, app: string): number[] {
  const home = homeMark(sb.home);
  const name = `CARAVAN_APP_NAME=${app}`;
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      const vars = readFileSync(`/proc/${entry}/environ`, "latin1").split("\0");
      if (vars.includes(home) && vars.includes(name)) pids.push(Number(entry));
    } catch {
      /* exited meanwhile */
    }
  }
  return pids;
}

/** Whether `pid` is the gateway process (or one of its workers): it serves on beside the daemon. */
export function isGatewayProcess(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "latin1").includes("gateway-process/main.js");
  } catch {
    return false;
  }
}

export function isRunning(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return !stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z");
  } catch {
    return false;
  }
}

/** GET a URL; network errors become status 0 (for polling). */
export async function get(url: string): Promise<{ status: number; body: string }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
    return { status: res.status, body: await res.text() };
  } catch {
    return { status: 0, body: "" };
  }
}

/**
 * Counts how many times the CLI imported a fixture that appends a line to `$LOADS_FILE` when
 * evaluated (test/fixtures/{unchanged,plan-cache}): `env` sets that variable for a command.
 */
export function loadCounter(dir: () => string) {
  const file = () => join(dir(), "loads");
  return {
    loads: () => (existsSync(file()) ? readFileSync(file(), "utf8").split("\n").length - 1 : 0),
    env: (more: NodeJS.ProcessEnv = {}) => ({ LOADS_FILE: file(), ...more }),
  };
}
