/**
 * The CLI contract of DESIGN §5 for the commands that start nothing (`plan`, `graph`, `--help`)
 * and how load and validation errors are reported: exit codes, what goes on stdout, and
 * messages that name the file, line, field or environment at fault.
 */
import {
  cpSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, sandbox, type Sandbox } from "./helpers.ts";

const APP = "examples/app-calling-app.ts";
const FIXTURES = "test/fixtures/cli";

let sb: Sandbox;
beforeAll(() => {
  sb = sandbox();
});
afterAll(async () => {
  await sb.cleanup();
});

/** Parses stdout as one JSON document (fails with the output when it is anything else). */
function parse(stdout: string, stderr = ""): unknown {
  try {
    return JSON.parse(stdout);
  } catch {
    throw new Error(`stdout is not one JSON document:\n${stdout}\n--- stderr ---\n${stderr}`);
  }
}

describe("plan", () => {
  it("--json prints exactly the plan document and nothing else on stdout", async () => {
    const r = await sb.run(["plan", APP, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(parse(r.stdout, r.stderr)).toStrictEqual({
      project: "default",
      domain: "development",
      environments: [
        { name: "app1-is-called-by-app2", kind: "app", dependsOn: [], level: 0 },
        {
          name: "app2-calls-app1",
          kind: "app",
          dependsOn: ["app1-is-called-by-app2"],
          level: 1,
        },
      ],
      order: ["app1-is-called-by-app2", "app2-calls-app1"],
    });
  });

  it("plans only the named environments and their dependencies", async () => {
    const r = await sb.run(["plan", "examples/ab-testing.ts", "app-b-variant", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(parse(r.stdout, r.stderr)).toMatchObject({ order: ["app-b-variant"] });
    const all = await sb.run(["plan", "examples/dependency-chain.ts", "service-2", "--json"]);
    expect(all.code, all.stderr).toBe(0);
    expect(parse(all.stdout, all.stderr)).toMatchObject({ order: ["service-1", "service-2"] });
  });

  it("prints a human plan: the scope, then one line per environment in order", async () => {
    const r = await sb.run(["plan", "examples/multiple-dependencies.ts"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toContain("Plan for default/development: 3 environment(s)");
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(3);
    expect(lines[0]).toMatch(/level 0\s+backend\s+app\s*$/);
    expect(lines[1]).toMatch(/level 0\s+database\s+app\s*$/);
    expect(lines[2]).toMatch(/level 1\s+api\s+app\s+after backend, database$/);
    expect(r.stdout).not.toContain("\x1b["); // NO_COLOR, and not a TTY
  });

  it("--project and --domain set the scope of the plan", async () => {
    const r = await sb.run(["plan", APP, "--project", "shop", "--domain", "staging", "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(parse(r.stdout, r.stderr)).toMatchObject({ project: "shop", domain: "staging" });
    const human = await sb.run(["plan", APP, "--project", "shop", "--domain", "staging"]);
    expect(human.stderr).toContain("Plan for shop/staging");
  });

  it("rejects a --project that is not a DNS-1123 label as a usage error", async () => {
    const r = await sb.run(["plan", APP, "--project", "Not_Valid"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--project");
    expect(r.stdout).toBe("");
  });

  it("discovers environments of a file that imports caravan through a relative path", async () => {
    const r = await sb.run(["plan", `${FIXTURES}/relative-import.ts`, "--json"]);
    expect(r.code, r.stderr).toBe(0);
    expect(parse(r.stdout, r.stderr)).toMatchObject({
      environments: [
        { name: "jobs", kind: "task", dependsOn: [], level: 0 },
        { name: "web", kind: "app", dependsOn: ["jobs"], level: 1 },
      ],
      order: ["jobs", "web"],
    });
  });

  it("discovers environments declared with another copy of caravan", async () => {
    // A second copy of the SDK (as in a nested install): identity is by brand, not instanceof.
    const dir = mkdtempSync(join(tmpdir(), "caravan-copy-"));
    try {
      cpSync(join(ROOT, "src"), join(dir, "src"), { recursive: true });
      symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
      writeFileSync(join(dir, "package.json"), '{ "type": "module" }\n');
      writeFileSync(
        join(dir, "app.ts"),
        [
          'import { AppEnvironment, TaskEnvironment } from "./src/public/index.ts";',
          'const jobs = new TaskEnvironment({ name: "jobs" });',
          'new AppEnvironment({ name: "web", command: "node web.js", dependsOn: [jobs] });',
        ].join("\n"),
      );
      const r = await sb.run(["plan", join(dir, "app.ts"), "--json"]);
      expect(r.code, r.stderr).toBe(0);
      expect(parse(r.stdout, r.stderr)).toMatchObject({ order: ["jobs", "web"] });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("graph", () => {
  it("prints a text tree from each top environment down to its dependencies", async () => {
    const r = await sb.run(["graph", "examples/dependency-chain.ts"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(
      ["service-3 (app)", "└── service-2 (app)", "    └── service-1 (app)", ""].join("\n"),
    );
    const text = await sb.run(["graph", "examples/multiple-dependencies.ts", "--format", "text"]);
    expect(text.stdout).toBe(
      ["api (app)", "├── backend (app)", "└── database (app)", ""].join("\n"),
    );
  });

  it("--format mermaid prints a mermaid graph with an edge per dependency", async () => {
    const r = await sb.run(["graph", "examples/task-env-dependency.ts", "--format", "mermaid"]);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split("\n");
    expect(lines[0]).toBe("graph BT");
    const id = (name: string) => {
      const line = lines.find((l) => l.includes(`"${name}"`));
      expect(line, `no node for ${name}:\n${r.stdout}`).toBeDefined();
      return line!.trim().split(/[[(]/)[0]!;
    };
    const app = id("serving-app");
    const task = id("training-env");
    expect(lines).toContain(`  ${app}["serving-app"]`);
    expect(lines).toContain(`  ${task}(["training-env"])`); // tasks get a rounded node
    expect(lines).toContain(`  ${app} --> ${task}`);
    expect(lines.filter((l) => l.includes("-->"))).toHaveLength(1);
  });

  it("--format dot prints a digraph with an edge per dependency", async () => {
    const r = await sb.run(["graph", "examples/ab-testing.ts", "--format", "dot"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout.startsWith("digraph caravan {\n")).toBe(true);
    expect(r.stdout.trimEnd().endsWith("}")).toBe(true);
    const edges = r.stdout.split("\n").filter((l) => l.includes("->"));
    expect(edges.map((l) => l.trim()).sort()).toEqual([
      '"root-ab-testing-app" -> "app-a-variant";',
      '"root-ab-testing-app" -> "app-b-variant";',
    ]);
  });

  it("a bad --format is a usage error (exit 2) that lists the formats", async () => {
    const r = await sb.run(["graph", APP, "--format", "svg"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("text, mermaid, dot");
    expect(r.stdout).toBe("");
  });
});

describe("plan and graph start nothing", () => {
  it("leave no process and no state behind but the plan cache", async () => {
    const own = sandbox();
    try {
      for (const args of [
        ["plan", APP],
        ["plan", APP, "--json"],
        ["graph", APP],
        ["graph", APP, "--format", "dot"],
      ]) {
        const r = await own.run(args);
        expect(r.code, r.stderr).toBe(0);
      }
      expect(own.processes()).toEqual([]);
      // No control plane's database, token or logs: only the record of the plan (plans/).
      expect(readdirSync(own.home)).toEqual(["plans"]);
    } finally {
      await own.cleanup();
    }
  });
});

describe("usage", () => {
  it("an unknown option or command exits 2", async () => {
    for (const args of [
      ["plan", APP, "--bogus"],
      ["graph", APP, "--bogus"],
      ["deploy", APP, "--bogus"],
      ["status", "--bogus"],
      ["frobnicate"],
      ["plan"],
    ]) {
      const r = await sb.run(args);
      expect(r.code, `caravan ${args.join(" ")}: ${r.stderr}`).toBe(2);
      expect(r.stdout).toBe("");
    }
  });

  it("a bad --concurrency is a usage error", async () => {
    const r = await sb.run(["deploy", APP, "--concurrency", "0"]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain("--concurrency");
  });

  const HELP: [string[], string[]][] = [
    [[], ["plan", "graph", "deploy", "serve", "status", "logs", "stop", "delete", "server"]],
    [["plan"], ["<file>", "--json", "--project", "--domain"]],
    [["graph"], ["<file>", "--format", "--project", "--domain"]],
    [["deploy"], ["<file>", "--json", "--force", "--concurrency", "--project", "--domain"]],
    [["serve"], ["<file>", "--concurrency", "--project", "--domain"]],
    [["status"], ["--json", "--all", "--project", "--domain"]],
    [["logs"], ["<app>", "--follow", "--tail"]],
    [["stop"], ["<app...>", "--cascade", "--json"]],
    [["delete"], ["<app...>", "--cascade", "--json"]],
    [["server"], ["start", "stop", "status"]],
    [["server", "start"], ["--json"]],
    [["server", "stop"], ["--keep-apps"]],
    [["server", "status"], ["--json"]],
  ];
  it.each(HELP)("caravan %j --help exits 0 and names its options", async (command, mentions) => {
    const r = await sb.run([...command, "--help"]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Usage: caravan ${command.join(" ")}`.trimEnd());
    for (const m of mentions) expect(r.stdout).toContain(m);
  });
});

describe("errors while loading and validating", () => {
  it("an error thrown by the file is reported with its file and line, exit 1", async () => {
    const r = await sb.run(["plan", `${FIXTURES}/throws.ts`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${FIXTURES}/throws.ts:7`);
    expect(r.stderr).toContain("settings.json is missing");
    expect(r.stderr).toContain("LOAD_FAILED");
    expect(r.stderr).not.toContain("internal error");
    expect(r.stdout).toBe("");
  });

  it("with --json the error is the one JSON document on stdout", async () => {
    const r = await sb.run(["plan", `${FIXTURES}/throws.ts`, "--json"]);
    expect(r.code).toBe(1);
    const doc = parse(r.stdout, r.stderr) as { error: { code: string; message: string } };
    expect(Object.keys(doc)).toEqual(["error"]);
    expect(doc.error.code).toBe("LOAD_FAILED");
    expect(doc.error.message).toContain(`${FIXTURES}/throws.ts:7`);
  });

  it("a file that does not exist is reported as such", async () => {
    const r = await sb.run(["plan", `${FIXTURES}/does-not-exist.ts`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${FIXTURES}/does-not-exist.ts: no such file`);
  });

  it("/etc/passwd or a directory is reported as what it is, never located in caravan's source", async () => {
    const passwd = await sb.run(["plan", "/etc/passwd"]);
    expect(passwd.code).toBe(1);
    expect(passwd.stderr).toContain("/etc/passwd: is not a TypeScript or JavaScript file");
    const dir = await sb.run(["plan", FIXTURES]);
    expect(dir.code).toBe(1);
    expect(dir.stderr).toContain(`${FIXTURES}: is a directory, not a file`);
    // Not a program, though named like one: the error is about that file.
    const copy = join(sb.home, "passwd.ts");
    writeFileSync(copy, readFileSync("/etc/passwd"));
    const parsed = await sb.run(["plan", copy]);
    expect(parsed.code).toBe(1);
    expect(parsed.stderr).toContain("passwd.ts");
    for (const r of [passwd, dir, parsed]) expect(r.stderr).not.toMatch(/src\/sdk|loader\.ts/);
  });

  it("a file that declares no environment is an error that says so", async () => {
    const r = await sb.run(["graph", `${FIXTURES}/no-env.ts`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`${FIXTURES}/no-env.ts declares no environment`);
    expect(r.stdout).toBe("");
  });

  it("an unknown environment name lists the ones the file declares", async () => {
    const r = await sb.run(["plan", APP, "nope"]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain('no environment named "nope"');
    expect(r.stderr).toContain("app1-is-called-by-app2, app2-calls-app1");
  });

  it("a cycle is rejected with its path", async () => {
    for (const command of ["plan", "graph"]) {
      const r = await sb.run([command, `${FIXTURES}/cycle.ts`]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("CYCLE");
      expect(r.stderr).toContain("a -> b -> c -> a");
      expect(r.stdout).toBe("");
    }
  });

  it("two environments with one name are rejected, naming both declaration sites", async () => {
    const r = await sb.run(["plan", `${FIXTURES}/duplicate.ts`]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("DUPLICATE_NAME");
    expect(r.stderr).toContain('"api"');
    expect(r.stderr).toContain(`${FIXTURES}/duplicate.ts:5`);
    expect(r.stderr).toContain(`${FIXTURES}/duplicate.ts:6`);
  });

  it("a malformed caravan.config.json next to the file is reported naming file and field", async () => {
    const r = await sb.run(["plan", `${FIXTURES}/bad-config/app.ts`, "--json"]);
    expect(r.code).toBe(1);
    const doc = parse(r.stdout, r.stderr) as { error: { code: string; message: string } };
    expect(doc.error.code).toBe("CONFIG");
    expect(doc.error.message).toContain(`${FIXTURES}/bad-config/caravan.config.json`);
    expect(doc.error.message).toContain('field "domain"');
    expect(r.stderr).toContain('field "domain"');
  });

  it("a caravan.config.ts sets the scope of commands that load no file (status)", async () => {
    // The CLI runs compiled; TypeScript is compiled only when a user's file is imported, and a
    // config in TypeScript is one.
    const dir = mkdtempSync(join(tmpdir(), "caravan-config-ts-"));
    try {
      writeFileSync(join(dir, "package.json"), '{ "type": "module" }');
      writeFileSync(
        join(dir, "caravan.config.ts"),
        'export default { project: "from-ts" as string };',
      );
      const r = await sb.run(["status"], { cwd: dir });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr + r.stdout).toContain("nothing is deployed in from-ts/development");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
