/**
 * `caravan init [dir]`: writes what a new project needs, never overwrites a file, keeps what
 * an existing package.json has, and the project it writes deploys as it is.
 */
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ROOT, eventually, useSandbox } from "./helpers.ts";
import { get, json, type DeploymentJSON } from "./support.ts";

const own = JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
  name: string;
  version: string;
};

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A fresh directory called `name` (its name becomes the project's). */
function freshDir(name: string, under = mkdtempSync(join(tmpdir(), "caravan-init-"))): string {
  dirs.push(under);
  const dir = join(under, name);
  mkdirSync(dir, { recursive: true });
  return dir;
}

/** Every file of a directory with its contents and modification time. */
function snapshotOf(dir: string): Record<string, { text: string; mtimeMs: number }> {
  return Object.fromEntries(
    readdirSync(dir).map((f) => [
      f,
      { text: readFileSync(join(dir, f), "utf8"), mtimeMs: statSync(join(dir, f)).mtimeMs },
    ]),
  );
}

describe("caravan init", () => {
  const sb = useSandbox();

  it("writes a project into an empty directory, and changes nothing the second time", async () => {
    const dir = freshDir("My Shop_2");
    const r = await sb.run(["init", dir]);
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(dir).sort()).toEqual([
      "caravan.config.ts",
      "caravan.ts",
      "package.json",
      "tsconfig.json",
    ]);
    // The project is named after the directory, made a DNS-1123 label.
    expect(readFileSync(join(dir, "caravan.config.ts"), "utf8")).toContain('project: "my-shop-2"');
    const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    expect(pkg).toMatchObject({
      type: "module",
      scripts: { deploy: "caravan deploy caravan.ts" },
      dependencies: { "caravan-deploy": `^${own.version}`, fastify: expect.any(String) },
    });
    const apps = readFileSync(join(dir, "caravan.ts"), "utf8");
    expect(apps).toContain('from "caravan-deploy/fastify"');
    expect(apps).toContain("dependsOn: [api]");
    expect(apps).toContain("api.endpoint");
    expect(JSON.parse(readFileSync(join(dir, "tsconfig.json"), "utf8"))).toMatchObject({
      compilerOptions: { module: "NodeNext" },
    });
    for (const f of ["caravan.config.ts", "caravan.ts", "package.json", "tsconfig.json"])
      expect(r.stdout).toMatch(new RegExp(`^created +${f.replace(".", "\\.")}$`, "m"));
    expect(r.stdout).toMatch(/^ +npm install\n +npx caravan deploy caravan\.ts$/m);

    const before = snapshotOf(dir);
    const again = await sb.run(["init", dir]);
    expect(again.code, again.stderr).toBe(0);
    expect(snapshotOf(dir)).toEqual(before);
    expect(again.stdout).not.toMatch(/^(created|updated)/m);
    for (const f of ["caravan.config.ts", "caravan.ts", "package.json", "tsconfig.json"])
      expect(again.stdout).toMatch(new RegExp(`^left alone +${f.replace(".", "\\.")} \\(`, "m"));
    expect(again.stdout).toContain("nothing to do");
  });

  it("adds to an existing package.json without losing anything, and never overwrites a file", async () => {
    const dir = freshDir("existing");
    const existing = {
      name: "existing-project",
      version: "3.1.4",
      description: "keep me",
      scripts: { test: "vitest", build: "tsc" },
      dependencies: { lodash: "^4.17.21" },
      devDependencies: { typescript: "^5.0.0" },
      engines: { node: ">=20" },
      custom: { nested: [1, 2, 3] },
    };
    writeFileSync(join(dir, "package.json"), JSON.stringify(existing, null, 4) + "\n");
    writeFileSync(join(dir, "tsconfig.json"), '{ "mine": true }\n');
    const r = await sb.run(["init"], { cwd: dir });
    expect(r.code, r.stderr).toBe(0);

    const pkg = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
    expect(pkg).toEqual({
      ...existing,
      type: "module",
      scripts: { ...existing.scripts, deploy: "caravan deploy caravan.ts" },
      dependencies: {
        ...existing.dependencies,
        "caravan-deploy": `^${own.version}`,
        fastify: expect.any(String),
      },
    });
    // Its indentation is kept too.
    expect(readFileSync(join(dir, "package.json"), "utf8")).toMatch(/^\{\n {4}"name"/);
    expect(r.stdout).toMatch(/^updated +package\.json: added .*dependencies\.caravan-deploy/m);
    expect(readFileSync(join(dir, "tsconfig.json"), "utf8")).toBe('{ "mine": true }\n');
    expect(r.stdout).toMatch(/^left alone +tsconfig\.json \(exists\)$/m);
    expect(existsSync(join(dir, "caravan.ts"))).toBe(true);

    // A second run: package.json has everything, so it is not even rewritten.
    const before = snapshotOf(dir);
    const again = await sb.run(["init"], { cwd: dir });
    expect(again.code, again.stderr).toBe(0);
    expect(snapshotOf(dir)).toEqual(before);
    expect(again.stdout).toContain("nothing to do");
  });

  it("--help explains what it writes", async () => {
    const r = await sb.run(["init", "--help"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/Never\s+overwrites a file/);
    expect(r.stdout).toContain("package.json");
  });

  it("writes a project that deploys: web calls api", async () => {
    // Inside this repository, so that fastify resolves from its node_modules.
    const dir = join(ROOT, "test/fixtures", `.tmp-init-${randomBytes(4).toString("hex")}`);
    dirs.push(dir);
    const r = await sb.run(["init", dir]);
    expect(r.code, r.stderr).toBe(0);
    // What `npm install` would give the project where the packages do not resolve yet from
    // it (this repository is the caravan-deploy package; a project of its own is outside its
    // scope): links to this checkout and to its fastify.
    const resolves = (name: string) => {
      try {
        createRequire(join(dir, "caravan.ts")).resolve(name);
        return true;
      } catch {
        return false;
      }
    };
    if (!resolves("caravan-deploy")) {
      // A project's node_modules then holds both (the snapshot's packages resolve from there).
      mkdirSync(join(dir, "node_modules"));
      symlinkSync(ROOT, join(dir, "node_modules/caravan-deploy"), "dir");
      symlinkSync(join(ROOT, "node_modules/fastify"), join(dir, "node_modules/fastify"), "dir");
    }
    expect(resolves("caravan-deploy")).toBe(true);

    const deployed = await sb.run(["deploy", "caravan.ts", "--json"], { cwd: dir });
    expect(deployed.code, deployed.stderr).toBe(0);
    const { deployments } = json<{ deployments: DeploymentJSON[] }>(deployed);
    expect(deployments.map((d) => [d.name, d.status])).toEqual([
      ["api", "ready"],
      ["web", "ready"],
    ]);
    const web = deployments.find((d) => d.name === "web")!.endpoint!;
    expect(await eventually(() => get(`${web}/greeting/World`).then((g) => g.status && g))).toEqual(
      { status: 200, body: "web says: Hello, World!" },
    );
    // Deployed in the project named after its directory.
    const status = await sb.run(["status", "--all", "--json"], { cwd: ROOT });
    const envs = json<{ environments: { project: string; name: string }[] }>(status).environments;
    expect(envs.map((e) => `${e.project}/${e.name}`).sort()).toEqual(
      [`${dir.split("/").pop()!.slice(1)}/api`, `${dir.split("/").pop()!.slice(1)}/web`].sort(),
    );
  });
});
