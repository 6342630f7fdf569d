/**
 * `caravan init [dir]`: what a new project needs to deploy two apps, one calling the other —
 * `caravan.config.ts`, `caravan.ts`, the `deploy` script and the dependencies in
 * `package.json` (merged into an existing one, nothing removed) and a `tsconfig.json` when
 * there is none. It never overwrites a file: what exists is left alone, and said so.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import type { Command } from "commander";
import { CaravanError } from "../../errors.ts";
import type { CommandContext } from "../main.ts";
import { color } from "../output.ts";

/** init's report is its output: on stdout. */
const say = (line: string) => void process.stdout.write(line + "\n");

/** The name users install and import (this package's own name). */
const PACKAGE = "caravan-deploy";

interface OwnPackage {
  name?: string;
  version?: string;
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
}

/** This package's own package.json: the first one above this module (in src/ or dist/). */
function ownPackage(): OwnPackage {
  for (let d = dirname(fileURLToPath(import.meta.url)); ; d = dirname(d)) {
    const file = join(d, "package.json");
    if (existsSync(file)) return JSON.parse(readFileSync(file, "utf8")) as OwnPackage;
    if (dirname(d) === d) throw new Error("caravan's own package.json is missing");
  }
}

/** The version range this package asks for `name` (a peer, then a dependency), else `fallback`. */
function rangeOf(own: OwnPackage, name: string, fallback: string): string {
  return (
    own.peerDependencies?.[name] ??
    own.dependencies?.[name] ??
    own.devDependencies?.[name] ??
    fallback
  );
}

/** A directory's name made a DNS-1123 label ("My App_2" -> "my-app-2"), as projects must be. */
export function projectNameOf(dir: string): string {
  const name = basename(resolve(dir))
    .toLowerCase()
    .replace(/[^a-z0-9-]+/g, "-")
    .replace(/-+/g, "-")
    .slice(0, 63)
    .replace(/^-+|-+$/g, "");
  return name || "my-project";
}

function configFile(project: string): string {
  return `import type { CaravanConfig } from "${PACKAGE}";

/** Where \`caravan\` deploys this project: its apps are named within the project and domain. */
export default {
  project: "${project}",
  domain: "development",
} satisfies CaravanConfig;
`;
}

const APPS_FILE = `/**
 * Two apps: \`web\` depends on \`api\`, so \`api\` starts first and is ready before \`web\` starts,
 * and \`web\` calls it at \`api.endpoint\`. Deploy both with \`npx caravan deploy caravan.ts\`.
 */
import Fastify from "fastify";
import { FastifyAppEnvironment } from "${PACKAGE}/fastify";

const apiApp = Fastify();
apiApp.get<{ Params: { name: string } }>("/greeting/:name", async (req) => {
  return \`Hello, \${req.params.name}!\`;
});

export const api = new FastifyAppEnvironment({
  name: "api",
  app: apiApp,
  requiresAuth: false,
});

const webApp = Fastify();
webApp.get<{ Params: { name: string } }>("/greeting/:name", async (req) => {
  // Inside the running app, api.endpoint is api's URL.
  const res = await fetch(\`\${api.endpoint}/greeting/\${encodeURIComponent(req.params.name)}\`);
  if (!res.ok) throw new Error(\`api answered \${res.status}\`);
  return \`web says: \${await res.text()}\`;
});

export const web = new FastifyAppEnvironment({
  name: "web",
  app: webApp,
  requiresAuth: false,
  dependsOn: [api],
});
`;

const TSCONFIG = `{
  "compilerOptions": {
    "target": "ES2022",
    "module": "NodeNext",
    "moduleResolution": "NodeNext",
    "strict": true,
    "skipLibCheck": true,
    "noEmit": true
  }
}
`;

/** Files whose module system a `"type": "module"` would change (CommonJS `.js` at the top or in src/). */
function hasPlainJs(dir: string): boolean {
  for (const d of [dir, join(dir, "src")]) {
    if (!existsSync(d)) continue;
    if (readdirSync(d).some((f) => f.endsWith(".js"))) return true;
  }
  return false;
}

export interface InitResult {
  dir: string;
  created: string[];
  updated: { file: string; what: string[] }[];
  leftAlone: { file: string; why: string }[];
  warnings: string[];
}

/** Writes the project's files into `dir`; never overwrites one. */
export function initProject(target: string): InitResult {
  const dir = resolve(target);
  if (existsSync(dir) && !statSync(dir).isDirectory())
    throw new CaravanError("USAGE", `${target} is a file, not a directory`);
  mkdirSync(dir, { recursive: true });
  const own = ownPackage();
  const result: InitResult = { dir, created: [], updated: [], leftAlone: [], warnings: [] };
  const project = projectNameOf(dir);

  const write = (name: string, contents: string) => {
    const file = join(dir, name);
    if (existsSync(file)) return void result.leftAlone.push({ file: name, why: "exists" });
    // "wx": never replace a file that appeared meanwhile.
    writeFileSync(file, contents, { flag: "wx" });
    result.created.push(name);
  };
  const otherConfig = ["caravan.config.json", "caravan.config.yaml", "caravan.config.yml"].find(
    (f) => existsSync(join(dir, f)),
  );
  if (otherConfig)
    result.leftAlone.push({ file: "caravan.config.ts", why: `${otherConfig} configures it` });
  else write("caravan.config.ts", configFile(project));
  write("caravan.ts", APPS_FILE);

  const deps: Record<string, string> = {
    [PACKAGE]: `^${own.version ?? "0.1.0"}`,
    fastify: rangeOf(own, "fastify", "^5.0.0"),
  };
  const pkgFile = join(dir, "package.json");
  if (!existsSync(pkgFile)) {
    const pkg = {
      name: project,
      version: "0.1.0",
      private: true,
      type: "module",
      scripts: { deploy: "caravan deploy caravan.ts" },
      dependencies: deps,
    };
    writeFileSync(pkgFile, JSON.stringify(pkg, null, 2) + "\n", { flag: "wx" });
    result.created.push("package.json");
  } else {
    const text = readFileSync(pkgFile, "utf8");
    let pkg: Record<string, unknown>;
    try {
      pkg = JSON.parse(text) as Record<string, unknown>;
    } catch (e) {
      throw new CaravanError(
        "USAGE",
        `${relative(process.cwd(), pkgFile) || pkgFile} is not valid JSON (${(e as Error).message}); fix it and run caravan init again`,
      );
    }
    if (!pkg || typeof pkg !== "object" || Array.isArray(pkg))
      throw new CaravanError("USAGE", `${pkgFile} is not a JSON object`);
    const what: string[] = [];
    const scripts = (pkg.scripts ?? {}) as Record<string, string>;
    if (scripts.deploy === undefined) {
      pkg.scripts = { ...scripts, deploy: "caravan deploy caravan.ts" };
      what.push('scripts.deploy ("caravan deploy caravan.ts")');
    } else if (!scripts.deploy.includes("caravan")) {
      result.warnings.push(
        `package.json already has a "deploy" script (${JSON.stringify(scripts.deploy)}); left it alone: run npx caravan deploy caravan.ts`,
      );
    }
    const dependencies = (pkg.dependencies ?? {}) as Record<string, string>;
    const devDependencies = (pkg.devDependencies ?? {}) as Record<string, string>;
    const added: Record<string, string> = {};
    for (const [name, range] of Object.entries(deps))
      if (!(name in dependencies) && !(name in devDependencies)) added[name] = range;
    if (Object.keys(added).length) {
      pkg.dependencies = { ...dependencies, ...added };
      what.push(...Object.entries(added).map(([n, r]) => `dependencies.${n} (${r})`));
    }
    if (pkg.type === undefined && !hasPlainJs(dir)) {
      pkg.type = "module";
      what.push('"type": "module"');
    } else if (pkg.type !== "module") {
      result.warnings.push(
        `package.json is not "type": "module", so caravan.ts would load as CommonJS: add "type": "module" to it, or rename caravan.ts to caravan.mts`,
      );
    }
    if (what.length) {
      const indent = /^[{[]\r?\n([ \t]+)/.exec(text)?.[1] ?? "  ";
      writeFileSync(pkgFile, JSON.stringify(pkg, null, indent) + "\n");
      result.updated.push({ file: "package.json", what });
    } else {
      result.leftAlone.push({ file: "package.json", why: "has the script and dependencies" });
    }
  }
  write("tsconfig.json", TSCONFIG);
  return result;
}

export function registerInit(program: Command, _ctx: CommandContext): void {
  program
    .command("init")
    .description(
      "Start a project: write caravan.config.ts, caravan.ts (two apps, one calling the other), the package.json script and dependencies, and a tsconfig.json. Never overwrites a file.",
    )
    .argument("[dir]", "the project's directory (created if missing)", ".")
    .addHelpText(
      "after",
      `
What it writes, each only when the file does not exist yet:
  caravan.config.ts   the project's name (from the directory's name) and domain
  caravan.ts          two Fastify apps: web depends on api and calls it
  tsconfig.json       settings for TypeScript editors
An existing package.json keeps everything in it; init adds the "deploy" script and the
dependencies ${PACKAGE} and fastify where they are missing (a new one is "type": "module").
Running it again changes nothing.

Examples:
  $ npx caravan init             in the current directory
  $ npx caravan init my-app      in ./my-app (created)`,
    )
    .action((target: string) => {
      const r = initProject(target);
      for (const f of r.created) say(`${color.green("created")}     ${f}`);
      for (const u of r.updated)
        say(`${color.green("updated")}     ${u.file}: added ${u.what.join(", ")}`);
      for (const l of r.leftAlone) say(`${color.dim("left alone")}  ${l.file} (${l.why})`);
      for (const w of r.warnings) say(`${color.yellow("note")}        ${w}`);
      if (!r.created.length && !r.updated.length)
        say(`\nnothing to do: ${r.dir} is already set up`);
      const rel = relative(process.cwd(), r.dir);
      const where = rel.startsWith("..") ? r.dir : rel;
      say(`\nnext${where ? `, in ${where}` : ""}:`);
      say("  npm install");
      say("  npx caravan deploy caravan.ts");
    });
}
