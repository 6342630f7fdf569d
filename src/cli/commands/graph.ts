import type { Command } from "commander";
import { CaravanError } from "../../errors.ts";
import type { Plan } from "../../plan/plan.ts";
import type { CommandContext } from "../main.ts";
import { loadProject, scopeOptions, type ScopeFlags } from "../project.ts";

const FORMATS = ["text", "mermaid", "dot"] as const;
type Format = (typeof FORMATS)[number];

export function registerGraph(program: Command, _ctx: CommandContext): void {
  scopeOptions(
    program
      .command("graph")
      .description("Print the dependency graph (an arrow means 'depends on').")
      .argument("<file>", "TypeScript file that declares environments")
      .argument("[env...]", "environments to include (with their dependencies); default: all")
      .option("--format <format>", "text | mermaid | dot", "text"),
  ).action(async (file: string, names: string[], opts: ScopeFlags & { format: string }) => {
    if (!FORMATS.includes(opts.format as Format)) {
      throw new CaravanError(
        "USAGE",
        `--format ${JSON.stringify(opts.format)} is not one of: ${FORMATS.join(", ")}`,
      );
    }
    const project = await loadProject(file, names, opts);
    const { planDeployment } = await import("../../plan/plan.ts");
    const plan = planDeployment(project.selected, {
      project: project.config.project,
      domain: project.config.domain,
    });
    process.stdout.write(renderGraph(plan, opts.format as Format));
  });
}

export function renderGraph(plan: Plan, format: Format): string {
  const q = (s: string) => JSON.stringify(s);
  if (format === "dot") {
    const lines = ["digraph caravan {", "  rankdir=BT;"];
    for (const e of plan.environments)
      lines.push(`  ${q(e.name)} [shape=${e.kind === "app" ? "box" : "ellipse"}];`);
    for (const e of plan.environments)
      for (const d of e.dependsOn) lines.push(`  ${q(e.name)} -> ${q(d)};`);
    return lines.join("\n") + "\n}\n";
  }
  if (format === "mermaid") {
    const id = new Map(plan.order.map((n, i) => [n, `n${i}`]));
    const lines = ["graph BT"];
    for (const e of plan.environments) {
      lines.push(
        e.kind === "app"
          ? `  ${id.get(e.name)}["${e.name}"]`
          : `  ${id.get(e.name)}(["${e.name}"])`,
      );
    }
    for (const e of plan.environments)
      for (const d of e.dependsOn) lines.push(`  ${id.get(e.name)} --> ${id.get(d)}`);
    return lines.join("\n") + "\n";
  }
  // text: a tree from each top-level environment (nothing depends on it) down to its dependencies.
  const out: string[] = [];
  const printed = new Set<string>();
  const walk = (name: string, prefix: string, last: boolean, top: boolean) => {
    const e = plan.byName.get(name)!;
    const label = `${name} (${e.kind})`;
    const seen = printed.has(name) && e.dependsOn.length > 0;
    out.push(top ? label : `${prefix}${last ? "└── " : "├── "}${label}${seen ? " …" : ""}`);
    if (seen) return;
    printed.add(name);
    const childPrefix = top ? "" : prefix + (last ? "    " : "│   ");
    e.dependsOn.forEach((d, i) => walk(d, childPrefix, i === e.dependsOn.length - 1, false));
  };
  const roots = plan.environments
    .filter((e) => e.dependents.length === 0)
    .map((e) => e.name)
    .sort();
  for (const r of roots) walk(r, "", true, true);
  return out.join("\n") + "\n";
}
