import type { Command } from "commander";
import type { CommandSpec } from "./direct.ts";
import { reportError } from "./output.ts";

/** What a command module exports: it declares its command(s) on the program. */
type Register = (program: Command, ctx: CommandContext) => void;

interface CommandModule {
  /** Each command it declares, as `caravan --help` lists it: `name [options] <args>`, summary. */
  listed: [term: string, summary: string][];
  load: () => Promise<Register>;
  /** A command declared as data (direct.ts): a plain run of it needs no commander. */
  direct?: () => Promise<CommandSpec<never>>;
}

/** The entry of a command declared as data: commander's declaration comes from the same data. */
function declared(spec: () => Promise<CommandSpec<never>>): Pick<CommandModule, "load" | "direct"> {
  return {
    direct: spec,
    load: async () => {
      const [{ registerSpec }, command] = await Promise.all([import("./direct.ts"), spec()]);
      return (program, ctx) => registerSpec(program, command, ctx);
    },
  };
}

/**
 * Every command, in the order `caravan --help` lists them. A run imports only the module of
 * the command it names, and the listing none: each module costs start-up time. A test
 * (main.test.ts) checks the terms against the commands the modules declare.
 */
export const COMMANDS: CommandModule[] = [
  {
    listed: [
      [
        "plan [options] <file> [env...]",
        "Validate a file's environments and print the plan; starts nothing",
      ],
    ],
    load: async () => (await import("./commands/plan.ts")).registerPlan,
  },
  {
    listed: [
      ["graph [options] <file> [env...]", "Print the dependency graph (text, mermaid, dot)"],
    ],
    load: async () => (await import("./commands/graph.ts")).registerGraph,
  },
  {
    listed: [
      ["deploy [options] <file> [env...]", "Deploy environments, each ready before its dependents"],
    ],
    load: async () => (await import("./commands/deploy.ts")).registerDeploy,
  },
  {
    listed: [
      [
        "serve [options] <file> [env...]",
        "Deploy in the foreground with live logs; Ctrl-C stops all",
      ],
    ],
    load: async () => (await import("./commands/serve.ts")).registerServe,
  },
  {
    listed: [
      ["status [options]", "Every deployed environment: state, revision, instances, endpoints"],
    ],
    ...declared(async () => (await import("./commands/status.ts")).status),
  },
  {
    listed: [["logs [options] <app>", "Show an app's logs"]],
    load: async () => (await import("./commands/logs.ts")).registerLogs,
  },
  {
    listed: [
      ["stop [options] <app...>", "Stop apps (dependents first), keeping their definitions"],
      ["delete [options] <app...>", "Stop and forget apps (dependents first)"],
    ],
    load: async () => (await import("./commands/stop.ts")).registerStopDelete,
  },
  {
    listed: [["server", "The local control plane daemon: start, stop, status"]],
    load: async () => (await import("./commands/server.ts")).registerServer,
  },
  {
    listed: [
      ["run [options] <file> <task>", "Run a task and print its output"],
      ["runs", "Task runs: list, show, delete, prune"],
    ],
    load: async () => (await import("./commands/run.ts")).registerRun,
  },
  {
    listed: [["job", "Jobs: run a deployed job again"]],
    load: async () => (await import("./commands/job.ts")).registerJob,
  },
  {
    listed: [["token", "Tokens for apps' public endpoints"]],
    load: async () => (await import("./commands/token.ts")).registerToken,
  },
  {
    listed: [["secret", "Manage the secrets apps declare"]],
    load: async () => (await import("./commands/secret.ts")).registerSecret,
  },
  {
    listed: [["image", "Images for the kubernetes backend: Dockerfile, build"]],
    load: async () => (await import("./commands/image.ts")).registerImage,
  },
  {
    listed: [["init [dir]", "Start a project: config, two apps, package.json; never overwrites"]],
    load: async () => (await import("./commands/init.ts")).registerInit,
  },
  {
    listed: [
      [
        "dev [options] <file> [env...]",
        "Deploy, stream logs and redeploy what changed on each save",
      ],
    ],
    load: async () => (await import("./commands/dev.ts")).registerDev,
  },
  {
    listed: [["console [options]", "A one-time login link to the web console"]],
    load: async () => (await import("./commands/console.ts")).registerConsole,
  },
  {
    listed: [["traces [options]", "Traces apps reported: list, show one as a waterfall"]],
    load: async () => (await import("./commands/traces.ts")).registerTraces,
  },
];

/** The name of a listed command (its term's first word). */
export const nameOf = (term: string) => term.split(" ")[0]!;

/** Each command sets this instead of calling process.exit, so output is flushed. */
export interface CommandContext {
  exitCode: number;
}

/**
 * Runs the CLI; returns the exit code (0 ok, 1 failure, 2 usage). A command declared as data
 * runs without commander when its arguments are plain (direct.ts); all else goes through it.
 */
export async function main(argv: string[]): Promise<number> {
  const ctx: CommandContext = { exitCode: 0 };
  try {
    const named = COMMANDS.find((m) => m.direct && nameOf(m.listed[0]![0]) === argv[0]);
    if (named?.direct) {
      // Both loaded at once: each import waits on reading files.
      const [spec, { parseDirect }] = await Promise.all([named.direct(), import("./direct.ts")]);
      const options = parseDirect(spec, argv.slice(1));
      if (options) {
        await spec.run(options, ctx);
        return ctx.exitCode;
      }
    }
    const { runProgram } = await import("./program.ts");
    return await runProgram(ctx, argv);
  } catch (e) {
    return reportError(e, argv.includes("--json"));
  }
}
