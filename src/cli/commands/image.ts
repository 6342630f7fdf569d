import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { CaravanError } from "../../errors.ts";
import type { CommandContext } from "../main.ts";
import { info, printJSON } from "../output.ts";
import { loadProject, scopeOptions, type ScopeFlags } from "../project.ts";

/** The one environment named on the command line, and the project's config. */
async function environmentOf(file: string, name: string, flags: ScopeFlags) {
  const project = await loadProject(file, [name], flags);
  const env = project.selected.find((e) => e.name === name);
  if (!env) {
    throw new CaravanError(
      "UNKNOWN_ENVIRONMENT",
      `${file} declares no environment "${name}"; it declares: ${project.environments.map((e) => e.name).join(", ")}`,
    );
  }
  return { env, config: project.config };
}

/** docker or podman, whichever is installed. */
function containerTool(): string {
  for (const tool of ["docker", "podman"]) {
    if (spawnSync(tool, ["--version"], { stdio: "ignore" }).status === 0) return tool;
  }
  throw new CaravanError(
    "UNSUPPORTED",
    "neither docker nor podman is installed, so the image cannot be built here; install one, or build the Dockerfile that `caravan image dockerfile <file> <env>` prints elsewhere and push it under the name it prints",
  );
}

export function registerImage(program: Command, _ctx: CommandContext): void {
  const image = program
    .command("image")
    .description(
      "Images for the kubernetes backend: an environment's Image spec as a Dockerfile, built and pushed.",
    );
  scopeOptions(
    image
      .command("dockerfile")
      .description("Print the Dockerfile of an environment's image (and, on stderr, its name)")
      .argument("<file>", "TypeScript file that declares environments")
      .argument("<env>", "the environment")
      .option("--json", "print { image, dockerfile } as JSON on stdout"),
  ).action(async (file: string, name: string, opts: ScopeFlags & { json?: boolean }) => {
    const { env, config } = await environmentOf(file, name, opts);
    const { Image, imageReference } = await import("../../sdk/image.ts");
    const dockerfile = (env.image ?? Image.fromDebianBase()).dockerfile();
    const ref = imageReference(env.name, env.image?.toJSON(), config.kubernetes?.registry);
    if (opts.json) return printJSON({ image: ref, dockerfile });
    info(`# image: ${ref}`);
    process.stdout.write(dockerfile);
  });
  scopeOptions(
    image
      .command("build")
      .description("Build an environment's image with docker or podman, and push it")
      .argument("<file>", "TypeScript file that declares environments")
      .argument("<env>", "the environment")
      .option(
        "--registry <prefix>",
        "push under this registry prefix, e.g. registry.example.com/team",
      )
      .option("--no-push", "build only"),
  ).action(
    async (file: string, name: string, opts: ScopeFlags & { registry?: string; push: boolean }) => {
      const { env, config } = await environmentOf(file, name, opts);
      const { imageReference, needsBuild } = await import("../../sdk/image.ts");
      if (!env.image || !needsBuild(env.image.toJSON())) {
        throw new CaravanError(
          "USAGE",
          `${name} runs ${imageReference(name, env.image?.toJSON())} as it is: there is nothing to build; give it packages or variables (image: Image.fromDebianBase().withNpmPackages(...)) to build one`,
        );
      }
      const registry = opts.registry ?? config.kubernetes?.registry;
      const ref = imageReference(env.name, env.image.toJSON(), registry);
      const tool = containerTool();
      const { tmpdir } = await import("node:os");
      const dir = mkdtempSync(join(tmpdir(), "caravan-image-"));
      try {
        writeFileSync(join(dir, "Dockerfile"), env.image.dockerfile());
        for (const args of [["build", "-t", ref, dir], ...(opts.push ? [["push", ref]] : [])]) {
          info(`$ ${tool} ${args.join(" ")}`);
          const r = spawnSync(tool, args, { stdio: ["ignore", "inherit", "inherit"] });
          if (r.status !== 0) {
            throw new CaravanError(
              "DEPLOY_FAILED",
              `${tool} ${args[0]} ${ref} failed (exit ${r.status ?? r.signal}); see its output above`,
            );
          }
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
      info(`${ref} ${opts.push ? "built and pushed" : "built"}`);
    },
  );
}
