/**
 * An unchanged `caravan deploy` reuses the last deploy's result without importing the file
 * (src/cli/unchanged.ts) — and never when something its revisions depend on changed: a
 * covered file, a variable the file reads, the config, a secret's value, or what runs.
 */
import { cpSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { useSandbox } from "./helpers.ts";
import { deploy, fixture, get, loadCounter, pidsOf, status } from "./support.ts";

describe("an unchanged deploy", () => {
  const sb = useSandbox();
  let dir: string;
  let main: string;
  const { loads, env } = loadCounter(() => dir);
  const revisions = (ds: { name: string; revision: string | null }[]) =>
    Object.fromEntries(ds.map((d) => [d.name, d.revision]));

  beforeEach(async () => {
    // A space in the path: file URLs the definitions read are percent-encoded.
    dir = mkdtempSync(join(tmpdir(), "caravan unchanged-"));
    cpSync(fixture("unchanged"), dir, { recursive: true });
    main = join(dir, "main.ts");
    writeFileSync(join(dir, "key.txt"), "k1");
    const set = await sb.run(["secret", "set", "API_KEY", "--file", join(dir, "key.txt")]);
    expect(set.code, set.stderr).toBe(0);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("reuses the last result without loading the file, once the control plane confirms it", async () => {
    const first = await deploy(sb, [main], env());
    expect(first.code, first.stderr).toBe(0);
    expect(first.deployments.map((d) => [d.name, d.status])).toEqual([
      ["back", "ready"],
      ["front", "ready"],
    ]);
    expect(loads()).toBe(1);
    const pids = pidsOf(await status(sb));

    const again = await deploy(sb, [main], env());
    expect(again.code, again.stderr).toBe(0);
    expect(again.deployments).toEqual(
      first.deployments.map((d) => ({ ...d, status: "unchanged" })),
    );
    expect(loads()).toBe(1); // not imported
    expect(pidsOf(await status(sb))).toEqual(pids);

    // The same through the human output.
    const human = await sb.run(["deploy", main], { env: env() });
    expect(human.code, human.stderr).toBe(0);
    expect(human.stderr).toMatch(/0 ready, 2 unchanged, 0 failed, 0 skipped/);
    expect(human.stdout).toContain(`front  ${first.by.front!.endpoint}`);
    expect(loads()).toBe(1);

    // What runs is not what was recorded: the full path, which starts front again.
    const stopped = await sb.run(["stop", "front"]);
    expect(stopped.code, stopped.stderr).toBe(0);
    const restarted = await deploy(sb, [main], env());
    expect(restarted.code, restarted.stderr).toBe(0);
    expect(restarted.deployments.map((d) => [d.name, d.status])).toEqual([
      ["back", "unchanged"],
      ["front", "ready"],
    ]);
    expect(loads()).toBe(2);
    expect(await get(`${first.by.front!.endpoint}/`)).toEqual({ status: 200, body: "hello world" });

    // --force never reuses.
    const forced = await deploy(sb, [main, "--force"], env());
    expect(forced.deployments.map((d) => d.status)).toEqual(["ready", "ready"]);
    expect(loads()).toBe(3);
  });

  it("picks up an edit to a module the file imports", async () => {
    const first = await deploy(sb, [main], env());
    expect(first.code, first.stderr).toBe(0);
    writeFileSync(join(dir, "greeting.ts"), 'export const GREETING = "bonjour";\n');
    const edited = await deploy(sb, [main], env());
    expect(edited.code, edited.stderr).toBe(0);
    expect(edited.by.back!.status).toBe("ready");
    expect(edited.by.back!.revision).not.toBe(first.by.back!.revision);
    expect(await get(`${first.by.back!.endpoint}/`)).toEqual({ status: 200, body: "bonjour" });
    expect(loads()).toBe(2);
    // Recorded again: the next deploy reuses the new result.
    const again = await deploy(sb, [main], env());
    expect(again.deployments.map((d) => d.status)).toEqual(["unchanged", "unchanged"]);
    expect(revisions(again.deployments)).toEqual(revisions(edited.deployments));
    expect(loads()).toBe(2);
  });

  it("picks up a file the definition reads with fs: one that appears, then an edit", async () => {
    const first = await deploy(sb, [main], env());
    expect(first.code, first.stderr).toBe(0);
    const answer = join(dir, "answer.txt");
    writeFileSync(answer, "from a file");
    const appeared = await deploy(sb, [main], env());
    expect(appeared.by.back!.status).toBe("ready");
    expect(await get(`${first.by.back!.endpoint}/`)).toEqual({ status: 200, body: "from a file" });
    writeFileSync(answer, "edited");
    const edited = await deploy(sb, [main], env());
    expect(edited.by.back!.status).toBe("ready");
    expect(await get(`${first.by.back!.endpoint}/`)).toEqual({ status: 200, body: "edited" });
    const again = await deploy(sb, [main], env());
    expect(again.deployments.map((d) => d.status)).toEqual(["unchanged", "unchanged"]);
    expect(loads()).toBe(3);
  });

  it("picks up a new variable among those the definition enumerates, and a directory's new entry", async () => {
    const first = await deploy(sb, [main], env());
    expect(first.code, first.stderr).toBe(0);
    const extra = await deploy(sb, [main], env({ EXTRA_ONE: "1" }));
    expect(extra.by.front!.status).toBe("ready");
    mkdirSync(join(dir, "extras"));
    const made = await deploy(sb, [main], env({ EXTRA_ONE: "1" }));
    expect(made.by.front!.status).toBe("unchanged"); // an empty directory lists as nothing
    writeFileSync(join(dir, "extras", "a.json"), "{}");
    const listed = await deploy(sb, [main], env({ EXTRA_ONE: "1" }));
    expect(listed.by.front!.status).toBe("ready");
    const again = await deploy(sb, [main], env({ EXTRA_ONE: "1" }));
    expect(again.deployments.map((d) => d.status)).toEqual(["unchanged", "unchanged"]);
  });

  it("does not miss a variable the file reads, a secret's new value or a new config file", async () => {
    const first = await deploy(sb, [main], env({ WHO: "ada" }));
    expect(first.code, first.stderr).toBe(0);

    const who = await deploy(sb, [main], env({ WHO: "bob" }));
    expect(who.code, who.stderr).toBe(0);
    expect(who.deployments.map((d) => [d.name, d.status])).toEqual([
      ["back", "unchanged"],
      ["front", "ready"],
    ]);
    expect(await get(`${first.by.front!.endpoint}/`)).toEqual({ status: 200, body: "hello bob" });

    writeFileSync(join(dir, "key.txt"), "k2");
    const set = await sb.run(["secret", "set", "API_KEY", "--file", join(dir, "key.txt")]);
    expect(set.code, set.stderr).toBe(0);
    const secret = await deploy(sb, [main], env({ WHO: "bob" }));
    expect(secret.code, secret.stderr).toBe(0);
    expect(secret.by.front!.status).toBe("ready");
    expect(secret.by.front!.revision).not.toBe(who.by.front!.revision);

    // A config file next to the file moves the deploy to another project.
    writeFileSync(join(dir, "caravan.config.json"), JSON.stringify({ project: "elsewhere" }));
    const moved = await sb.run([
      "secret",
      "set",
      "API_KEY",
      "--project",
      "elsewhere",
      "--file",
      join(dir, "key.txt"),
    ]);
    expect(moved.code, moved.stderr).toBe(0);
    const config = await deploy(sb, [main], env({ WHO: "bob" }));
    expect(config.code, config.stderr).toBe(0);
    expect(config.deployments.map((d) => d.status)).toEqual(["ready", "ready"]);
    expect(Object.keys(await status(sb, ["--project", "elsewhere"])).sort()).toEqual([
      "back",
      "front",
    ]);
    expect(loads()).toBe(4);
  });
});
