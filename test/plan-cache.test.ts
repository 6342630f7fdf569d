/**
 * An unchanged `caravan plan` prints the last plan of the same arguments without importing the
 * file (src/cli/unchanged.ts) — and never a stale one: an edited module, a variable the file
 * reads or a new config file give the new plan; a plan that failed is not recorded.
 */
import { cpSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { useSandbox } from "./helpers.ts";
import { fixture, json, loadCounter } from "./support.ts";

interface PlanJSON {
  project: string;
  environments: { name: string; dependsOn: string[]; level: number }[];
  order: string[];
}

describe("an unchanged plan", () => {
  const sb = useSandbox();
  let dir: string;
  let main: string;
  const { loads, env } = loadCounter(() => dir);
  const plan = async (args: string[] = [], more: NodeJS.ProcessEnv = {}) => {
    const r = await sb.run(["plan", main, "--json", ...args], { env: env(more) });
    expect(r.code, r.stderr).toBe(0);
    return json<PlanJSON>(r);
  };

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "caravan plan-cache-"));
    cpSync(fixture("plan-cache"), dir, { recursive: true });
    main = join(dir, "main.ts");
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("prints the recorded plan without importing the file, as the uncached run printed it", async () => {
    const human = await sb.run(["plan", main], { env: env() });
    expect(human.code, human.stderr).toBe(0);
    expect(human.stdout).toMatch(/level 1\s+front\s+app\s+after back/);
    expect(loads()).toBe(1);
    const again = await sb.run(["plan", main], { env: env() });
    expect(again).toMatchObject({ code: 0, stdout: human.stdout, stderr: human.stderr });
    expect(loads()).toBe(1); // not imported

    // --json from the record is what an uncached run prints (another home has no record).
    const cached = await sb.run(["plan", main, "--json"], { env: env() });
    expect(cached.code, cached.stderr).toBe(0);
    expect(loads()).toBe(1);
    const other = mkdtempSync(join(tmpdir(), "caravan-test-"));
    try {
      const uncached = await sb.run(["plan", main, "--json"], {
        env: env({ CARAVAN_HOME: other }),
      });
      expect(uncached.code, uncached.stderr).toBe(0);
      expect(loads()).toBe(2);
      expect(cached.stdout).toBe(uncached.stdout);
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
    // Planning starts no control plane.
    expect(existsSync(join(sb.home, "daemon.json"))).toBe(false);
  });

  it("gives the new plan after an edit to an imported module", async () => {
    expect((await plan()).order).toEqual(["back", "front"]);
    writeFileSync(join(dir, "names.ts"), 'export const BACK = "backend";\n');
    expect((await plan()).order).toEqual(["backend", "front"]);
    expect(loads()).toBe(2);
    expect((await plan()).order).toEqual(["backend", "front"]); // recorded again
    expect(loads()).toBe(2);
  });

  it("gives the new plan after an edit to a module no bundler can follow, a file such an import looked for in vain, or a module the config file imports", async () => {
    // A computed import(), one of a file that may not exist, and a config's own import:
    // esbuild's listing of the file sees none of them.
    main = join(dir, "computed.ts");
    writeFileSync(
      main,
      [
        'import { appendFileSync } from "node:fs";',
        'import { TaskEnvironment } from "caravan-deploy";',
        'if (process.env.LOADS_FILE) appendFileSync(process.env.LOADS_FILE, "loaded\\n");',
        "const at = (file: string) => new URL(file, import.meta.url).href;",
        'const { NAME } = await import(at("./part.ts"));',
        'const override = await import(at("./override.ts")).catch(() => undefined);',
        "export const part = new TaskEnvironment({ name: override?.NAME ?? NAME });",
      ].join("\n"),
    );
    writeFileSync(join(dir, "part.ts"), 'export const NAME = "first";\n');
    writeFileSync(
      join(dir, "caravan.config.ts"),
      'import { PROJECT } from "./project-name.ts";\nexport default { project: PROJECT };\n',
    );
    writeFileSync(join(dir, "project-name.ts"), 'export const PROJECT = "one";\n');
    expect(await plan()).toMatchObject({ project: "one", order: ["first"] });
    expect(await plan()).toMatchObject({ project: "one", order: ["first"] });
    expect(loads()).toBe(1); // recorded, and the record holds
    writeFileSync(join(dir, "part.ts"), 'export const NAME = "second";\n');
    expect(await plan()).toMatchObject({ project: "one", order: ["second"] });
    writeFileSync(join(dir, "override.ts"), 'export const NAME = "third";\n');
    expect(await plan()).toMatchObject({ project: "one", order: ["third"] });
    writeFileSync(join(dir, "project-name.ts"), 'export const PROJECT = "two";\n');
    expect(await plan()).toMatchObject({ project: "two", order: ["third"] });
    expect(loads()).toBe(4);
    expect(await plan()).toMatchObject({ project: "two", order: ["third"] });
    expect(loads()).toBe(4);
  });

  it("records no plan when a file it loaded is saved while it runs (the record would pair the new content with the old plan)", async () => {
    writeFileSync(join(dir, "save-names"), 'export const BACK = "saved";\n');
    expect((await plan()).order).toEqual(["back", "front"]);
    expect(loads()).toBe(1);
    // names.ts now holds what was saved: the plan is computed again, not the recorded one.
    expect((await plan()).order).toEqual(["saved", "front"]);
    expect(loads()).toBe(2);
  });

  it("gives the new plan when a variable the file reads changes, or a config file appears", async () => {
    expect((await plan()).order).toEqual(["back", "front"]);
    expect((await plan([], { EXTRA: "seed" })).order).toEqual(["seed", "back", "front"]);
    expect(loads()).toBe(2);
    expect((await plan()).order).toEqual(["back", "front"]); // the first record no longer holds
    expect(loads()).toBe(3);

    writeFileSync(join(dir, "caravan.config.json"), JSON.stringify({ project: "elsewhere" }));
    expect((await plan()).project).toBe("elsewhere");
    expect(loads()).toBe(4);
    // The scope given on the command line is part of what was asked.
    expect((await plan(["--project", "third"])).project).toBe("third");
    expect(loads()).toBe(5);
    expect((await plan()).project).toBe("elsewhere");
    expect(loads()).toBe(5);
  });

  it("does not record a plan that failed, nor print a recorded plan when it would fail", async () => {
    const fails = async () => {
      const failed = await sb.run(["plan", main, "--json"], { env: env({ CYCLE: "1" }) });
      expect(failed.code).toBe(1);
      expect(failed.stdout).toContain("CYCLE");
    };
    await fails();
    await fails();
    expect(loads()).toBe(2);
    expect(existsSync(join(sb.home, "plans")) ? readdirSync(join(sb.home, "plans")) : []).toEqual(
      [],
    );
    expect((await plan()).order).toEqual(["back", "front"]);
    expect((await plan()).order).toEqual(["back", "front"]);
    expect(loads()).toBe(3); // the plan that succeeded is recorded
    await fails(); // ...and not printed when $CYCLE, which the file reads, is set
    expect(loads()).toBe(4);
  });
});
