/**
 * DESIGN §3.7 and issue 4: secrets, command apps in any language with their files and
 * inputs, file inputs as snapshots, server functions with start-up and shutdown hooks.
 */
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { BIN, ROOT, type CliResult, type Sandbox, useSandbox } from "./helpers.ts";
import {
  appProcesses,
  deploy,
  events,
  eventsFile,
  fixture,
  get,
  json,
  status,
  statuses,
  timeOf,
} from "./support.ts";

/** `caravan <args>` with `input` on its stdin. */
function runWithStdin(sb: Sandbox, args: string[], input: string): Promise<CliResult> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: sb.env });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => (stdout += d));
    child.stderr.on("data", (d: Buffer) => (stderr += d));
    child.on("close", (code) => resolve({ code: code ?? 1, stdout, stderr }));
    child.stdin.end(input);
  });
}

/** Every file under `dir`, recursively. */
function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" })
    .map((f) => join(dir, f))
    .filter((f) => statSync(f, { throwIfNoEntry: false })?.isFile());
}

describe("app kinds", () => {
  const sb = useSandbox();

  it("secrets: set from stdin, injected at launch, absent from every file, output and the state DB", async () => {
    const value = `s3cr3t-${Math.random().toString(36).slice(2)}-value`;
    const outputs: CliResult[] = [];
    const run = async (args: string[], env?: NodeJS.ProcessEnv) => {
      const r = await sb.run(args, env ? { env } : {});
      outputs.push(r);
      return r;
    };

    const set = await runWithStdin(sb, ["secret", "set", "API_KEY"], `${value}\n`);
    outputs.push(set);
    expect(set.code, set.stderr).toBe(0);
    const store = join(sb.home, "secrets.json");
    expect(statSync(store).mode & 0o777).toBe(0o600);

    const list = await run(["secret", "list", "--json"]);
    expect(json(list)).toEqual({ project: "default", domain: "development", secrets: ["API_KEY"] });
    // Scoped: another domain has none.
    expect(json(await run(["secret", "list", "--json", "--domain", "staging"]))).toMatchObject({
      secrets: [],
    });

    const first = await deploy(sb, [fixture("app-kinds/secret.ts")]);
    outputs.push(first);
    expect(first.code, first.stderr).toBe(0);
    const url = first.by["secret-keeper"]!.endpoint!;
    const sha = (v: string) => createHash("sha256").update(v).digest("hex");
    expect(JSON.parse((await get(url)).body)).toEqual({
      has: true,
      length: value.length,
      sha256: sha(value),
    });

    // Same value: unchanged. A new value: the app is changed and restarted with it.
    const again = await deploy(sb, [fixture("app-kinds/secret.ts")]);
    outputs.push(again);
    expect(again.by["secret-keeper"]!.status).toBe("unchanged");
    const value2 = `${value}-rotated`;
    const set2 = await runWithStdin(sb, ["secret", "set", "API_KEY"], value2);
    outputs.push(set2);
    expect(set2.code, set2.stderr).toBe(0);
    const rotated = await deploy(sb, [fixture("app-kinds/secret.ts")]);
    outputs.push(rotated);
    expect(rotated.by["secret-keeper"]!.status).toBe("ready");
    expect(rotated.by["secret-keeper"]!.revision).not.toBe(first.by["secret-keeper"]!.revision);
    expect(JSON.parse((await get(url)).body)).toMatchObject({ sha256: sha(value2) });

    // Human and JSON outputs of everything that shows state.
    await run(["deploy", fixture("app-kinds/secret.ts")]);
    await run(["plan", fixture("app-kinds/secret.ts"), "--json"]);
    await run(["plan", fixture("app-kinds/secret.ts")]);
    await run(["status", "--json"]);
    await run(["status"]);
    await run(["logs", "secret-keeper"]);
    await run(["secret", "list"]);

    for (const secret of [value, value2]) {
      for (const r of outputs) {
        expect(r.stdout).not.toContain(secret);
        expect(r.stderr).not.toContain(secret);
      }
      // Every file caravan keeps (logs, state DB and its WAL, bundles, inputs...) but the store.
      for (const file of filesUnder(sb.home).filter((f) => f !== store)) {
        expect(readFileSync(file).includes(secret), file).toBe(false);
      }
    }
    expect(readFileSync(store, "utf8")).toContain(value2);

    // Never from argv: a value as an argument is a usage error. --file takes it as is.
    expect((await run(["secret", "set", "OTHER", "not-the-secret"])).code).toBe(2);
    const valueFile = join(sb.home, "..", `${sb.home.split("/").pop()}-value.txt`);
    writeFileSync(valueFile, "line one\nline two\n");
    try {
      expect((await run(["secret", "set", "OTHER", "--file", valueFile])).code).toBe(0);
    } finally {
      rmSync(valueFile, { force: true });
    }
    expect(JSON.parse(readFileSync(store, "utf8")).scopes["default/development"].OTHER).toBe(
      "line one\nline two\n",
    );

    // delete.
    const del = await run(["secret", "delete", "API_KEY", "--json"]);
    expect(json(del)).toEqual({ deleted: "API_KEY" });
    expect(json(await run(["secret", "list", "--json"]))).toMatchObject({ secrets: ["OTHER"] });
    const missing = await run(["secret", "delete", "API_KEY"]);
    expect(missing.code).toBe(1);
  });

  it("a missing secret fails the deploy before anything starts, naming it", async () => {
    const r = await sb.run(["deploy", fixture("app-kinds/missing-secret.ts")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("MISSING_SECRET");
    expect(r.stderr).toContain("DB_PASSWORD, STRIPE_KEY");
    expect(r.stderr).toContain("needy");
    // Nothing started: no app, not even the control plane.
    expect(sb.processes()).toEqual([]);
    expect(appProcesses(sb, "free")).toEqual([]);
  });

  it("command apps: every input kind under its env var and in $CARAVAN_INPUTS_FILE; file inputs are snapshots", async () => {
    const src = mkdtempSync(join(tmpdir(), "caravan-inputs-"));
    try {
      const settingsFile = join(src, "settings.txt");
      writeFileSync(settingsFile, "version one");
      mkdirSync(join(src, "data"));
      writeFileSync(join(src, "data", "a.csv"), "1,2");
      writeFileSync(join(src, "data", "b.csv"), "3,4");
      const env = { SETTINGS_FILE: settingsFile, DATA_DIR_SRC: join(src, "data") };
      const first = await deploy(sb, [fixture("app-kinds/inputs.ts")], env);
      expect(first.code, first.stderr).toBe(0);
      const peer = first.by.peer!.internalEndpoint!;
      const shown = JSON.parse((await get(first.by.shower!.endpoint!)).body);
      // The command runs in its file snapshot (its include and its mounted file inputs).
      expect(shown.cwd.startsWith(join(sb.home, "files"))).toBe(true);
      expect(shown.cwdFiles).toEqual(["conf", "inputs", "inputs-server.mjs"]);
      expect(shown.argv).toEqual(["--motto=carpe diem", "--name=shower", `--peer=${peer}`]);
      expect(shown.env).toEqual({
        MOTTO: "carpe diem",
        SETTINGS: join(shown.cwd, "conf/settings.txt"),
        DATA_DIR: join(shown.cwd, "inputs/data"),
        PEER_URL: peer,
        CARAVAN_ENDPOINT_PEER: peer,
      });
      expect(shown.settings).toBe("version one");
      expect(shown.data).toEqual(["a.csv", "b.csv"]);
      expect(shown.inputsFile).toMatchObject({
        app: "shower",
        inputs: {
          motto: "carpe diem",
          settings: shown.env.SETTINGS,
          data: shown.env.DATA_DIR,
          peer_url: peer,
        },
        inputEnvVars: {
          motto: "MOTTO",
          settings: "SETTINGS",
          data: "DATA_DIR",
          peer_url: "PEER_URL",
        },
        endpoints: { peer: { internalEndpoint: peer } },
      });
      // A runtime app reads the same File input through getInput: a copy, not the original.
      const read = JSON.parse((await get(first.by.reader!.endpoint!)).body);
      expect(read.settings).toBe("version one");
      expect(read.path).not.toBe(settingsFile);

      // Editing the originals does not leak into the running apps.
      writeFileSync(settingsFile, "version two");
      writeFileSync(join(src, "data", "c.csv"), "5,6");
      expect(JSON.parse((await get(first.by.shower!.endpoint!)).body).settings).toBe("version one");
      expect(JSON.parse((await get(first.by.reader!.endpoint!)).body).settings).toBe("version one");

      // The next deploy takes the new contents: both apps changed, peer unchanged.
      const second = await deploy(sb, [fixture("app-kinds/inputs.ts")], env);
      expect(second.code, second.stderr).toBe(0);
      expect(statuses(second.deployments)).toEqual({
        peer: "unchanged",
        shower: "ready",
        reader: "ready",
      });
      const shown2 = JSON.parse((await get(first.by.shower!.endpoint!)).body);
      expect(shown2.settings).toBe("version two");
      expect(shown2.data).toEqual(["a.csv", "b.csv", "c.csv"]);
      expect(JSON.parse((await get(first.by.reader!.endpoint!)).body).settings).toBe("version two");

      // A changed string input changes the app too.
      const third = await deploy(sb, [fixture("app-kinds/inputs.ts")], { ...env, MOTTO: "hi" });
      expect(statuses(third.deployments)).toMatchObject({ shower: "ready", reader: "unchanged" });
      expect(JSON.parse((await get(first.by.shower!.endpoint!)).body).env.MOTTO).toBe("hi");
    } finally {
      rmSync(src, { recursive: true, force: true });
    }
  });

  it("an unknown ${VAR} in a command app's args fails the deploy before anything starts", async () => {
    const r = await sb.run(["deploy", fixture("app-kinds/unknown-var.ts")]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("UNKNOWN_VARIABLE");
    expect(r.stderr).toContain("${NOT_DECLARED}, which is not defined");
    expect(r.stderr).not.toContain("internal error");
    expect(sb.processes()).toEqual([]);
  });

  it("server functions: ready when the port answers; onStartup runs before serving, onShutdown on stop", async () => {
    const d = await deploy(sb, [fixture("app-kinds/server-function.ts")], {
      EVENTS_FILE: eventsFile(sb),
    });
    expect(d.code, d.stderr).toBe(0);
    expect(d.by["fn-app"]).toMatchObject({ status: "ready" });
    expect(await get(d.by["fn-app"]!.endpoint!)).toEqual({
      status: 200,
      body: "howdy from a server function (startup saw howdy)",
    });
    const before = events(sb);
    expect(timeOf(before, "fn-app", "startup")).toBeLessThan(
      timeOf(before, "fn-app", "first-request"),
    );
    expect(before.some((e) => e.event === "shutdown")).toBe(false);
    const pids = (await status(sb))["fn-app"]!.pids;
    expect(pids).toHaveLength(1);

    const stop = await sb.run(["stop", "fn-app"]);
    expect(stop.code, stop.stderr).toBe(0);
    expect(events(sb).filter((e) => e.event === "shutdown")).toMatchObject([
      { app: "fn-app", pid: pids[0] },
    ]);
    expect(appProcesses(sb, "fn-app")).toEqual([]);
  });
});
