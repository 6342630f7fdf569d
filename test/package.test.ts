/**
 * The package as a user meets it: `npm pack`, installed into a fresh project next to that
 * project's own fastify, then a `.ts` file and a plain `.mjs` file that import it by its name
 * are type-checked, deployed with the installed CLI, called and torn down. Slow (the install
 * compiles better-sqlite3 when no prebuilt binary can be fetched): one test.
 */
import { execFile } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { ROOT, getText, useSandbox } from "./helpers.ts";
import { fixture } from "./support.ts";

const run = promisify(execFile);

describe("the package", { timeout: 600_000 }, () => {
  const sb = useSandbox();

  it("packs, installs into a fresh project, type-checks, and deploys a .ts and a .mjs file that import it", async () => {
    const dir = mkdtempSync(join(tmpdir(), "caravan-package-"));
    const project = join(dir, "project");
    const cli = (args: string[]) =>
      run(
        process.execPath,
        [join(project, "node_modules/caravan-deploy/bin/caravan.js"), ...args],
        {
          cwd: project,
          env: sb.env,
          timeout: 120_000,
        },
      );
    try {
      const { stdout } = await run("npm", ["pack", "--pack-destination", dir, "--silent"], {
        cwd: ROOT,
        timeout: 180_000,
      });
      const tarball = join(dir, stdout.trim().split("\n").at(-1)!);
      const listed = (await run("tar", ["tzf", tarball])).stdout.split("\n");
      // What ships: the CLI and the compiled package, not the sources or the tests.
      expect(listed).toContain("package/dist/public/index.js");
      expect(listed).toContain("package/dist/public/index.d.ts");
      expect(listed).toContain("package/bin/caravan.js");
      expect(listed.filter((f) => /^package\/(src|test)\//.test(f))).toEqual([]);
      expect(listed.filter((f) => /\.test\.(js|d\.ts)$/.test(f))).toEqual([]);

      await run("mkdir", ["-p", project]);
      writeFileSync(
        join(project, "package.json"),
        JSON.stringify({ name: "user-project", private: true, type: "module" }),
      );
      const fastify = JSON.parse(
        readFileSync(join(ROOT, "node_modules/fastify/package.json"), "utf8"),
      );
      await run(
        "npm",
        ["install", tarball, `fastify@${fastify.version}`, "--no-audit", "--no-fund"],
        {
          cwd: project,
          timeout: 480_000,
        },
      );
      copyFileSync(fixture("package/app.ts"), join(project, "app.ts"));
      copyFileSync(fixture("package/plain.mjs"), join(project, "plain.mjs"));

      // The declarations type-check a user's file (skipLibCheck off: they are checked too).
      writeFileSync(
        join(project, "tsconfig.json"),
        JSON.stringify({
          compilerOptions: {
            target: "ES2022",
            module: "NodeNext",
            moduleResolution: "NodeNext",
            strict: true,
            noEmit: true,
            skipLibCheck: false,
            types: [],
            typeRoots: [join(ROOT, "node_modules/@types")],
          },
          files: ["app.ts"],
        }),
      );
      await run(process.execPath, [join(ROOT, "node_modules/typescript/bin/tsc"), "-p", project]);

      const ts = JSON.parse((await cli(["deploy", "app.ts", "--json"])).stdout) as {
        deployments: { name: string; status: string; endpoint: string }[];
      };
      expect(ts.deployments.map((d) => [d.name, d.status]).sort()).toEqual([
        ["inner", "ready"],
        ["outer", "ready"],
        ["ready", "ready"],
      ]);
      const outer = ts.deployments.find((d) => d.name === "outer")!;
      expect(await getText(outer.endpoint)).toEqual({
        status: 200,
        body: "outer got: hello from inner",
      });
      const mjs = JSON.parse((await cli(["deploy", "plain.mjs", "--json"])).stdout) as {
        deployments: { name: string; endpoint: string }[];
      };
      expect(await getText(mjs.deployments[0]!.endpoint)).toEqual({
        status: 200,
        body: "plain js",
      });
      await cli(["delete", "outer", "inner", "ready", "plain"]);
      await cli(["server", "stop"]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
