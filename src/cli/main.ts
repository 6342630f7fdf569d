import { Command, CommanderError, Help } from "commander";
import { reportError } from "./output.ts";

/** What a command module exports: it declares its command(s) on the program. */
type Register = (program: Command, ctx: CommandContext) => void;

interface CommandModule {
  /** Each command it declares, as `caravan --help` lists it: `name [options] <args>`, summary. */
  listed: [term: string, summary: string][];
  load: () => Promise<Register>;
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
    load: async () => (await import("./commands/status.ts")).registerStatus,
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
 * The program with the command `argv` names (the first word that is not an option, or the one
 * after `help`: the program itself takes only --help and --version), declared by its module.
 * Without one (`--help`, an unknown command) every command is only listed, from COMMANDS.
 */
export async function buildProgram(ctx: CommandContext, argv: string[]): Promise<Command> {
  const program = new Command("caravan")
    .description("Deploy graphs of services: dependencies first, each ready before its dependents.")
    .version("0.1.0")
    .showHelpAfterError("(run with --help for usage)")
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) })
    .addHelpText(
      "after",
      `
Examples:
  $ npx caravan plan examples/app-calling-app.ts      what would deploy, in which order
  $ npx caravan deploy examples/app-calling-app.ts    deploy it (starts the control plane)
  $ npx caravan status                                what runs, with endpoints
  $ npx caravan logs app2-calls-app1 --follow         an app's logs
  $ npx caravan run examples/task-env-dependency.ts train --input points='[[1,2]]'
                                                      run a task, print its output
  $ npx caravan runs                                  recent task runs
  $ npx caravan server stop                           stop the control plane and its apps`,
    );
  const words = argv.filter((a) => !a.startsWith("-"));
  const word = words[0] === "help" ? words[1] : words[0];
  const named = COMMANDS.find((m) => m.listed.some(([term]) => nameOf(term) === word));
  if (named) (await named.load())(program, ctx);
  else {
    const terms = new Map<Command, string>();
    for (const [term, summary] of COMMANDS.flatMap((m) => m.listed))
      terms.set(program.command(nameOf(term)).summary(summary), term);
    program.configureHelp({
      subcommandTerm(this: Help, cmd) {
        return terms.get(cmd) ?? Help.prototype.subcommandTerm.call(this, cmd);
      },
    });
  }
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

/** Runs the CLI; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  const ctx: CommandContext = { exitCode: 0 };
  try {
    const program = await buildProgram(ctx, argv);
    await program.parseAsync(argv, { from: "user" });
    return ctx.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      if (
        e.code === "commander.helpDisplayed" ||
        e.code === "commander.version" ||
        e.code === "commander.help"
      )
        return 0;
      return 2;
    }
    return reportError(e, argv.includes("--json"));
  }
}
