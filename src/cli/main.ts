import { Command, CommanderError } from "commander";
import { reportError } from "./output.ts";

/** What a command module exports: it declares its command(s) on the program. */
type Register = (program: Command, ctx: CommandContext) => void;

/**
 * Every command, by the names it declares, in the order `--help` lists them. A run imports
 * only the module of the command it names (each module costs start-up time); `--help`, `help`
 * and an unknown command load them all.
 */
const COMMANDS: { names: string[]; load: () => Promise<Register> }[] = [
  { names: ["plan"], load: async () => (await import("./commands/plan.ts")).registerPlan },
  { names: ["graph"], load: async () => (await import("./commands/graph.ts")).registerGraph },
  { names: ["deploy"], load: async () => (await import("./commands/deploy.ts")).registerDeploy },
  { names: ["serve"], load: async () => (await import("./commands/serve.ts")).registerServe },
  { names: ["status"], load: async () => (await import("./commands/status.ts")).registerStatus },
  { names: ["logs"], load: async () => (await import("./commands/logs.ts")).registerLogs },
  {
    names: ["stop", "delete"],
    load: async () => (await import("./commands/stop.ts")).registerStopDelete,
  },
  { names: ["server"], load: async () => (await import("./commands/server.ts")).registerServer },
  { names: ["run", "runs"], load: async () => (await import("./commands/run.ts")).registerRun },
  { names: ["job"], load: async () => (await import("./commands/job.ts")).registerJob },
  { names: ["token"], load: async () => (await import("./commands/token.ts")).registerToken },
  { names: ["secret"], load: async () => (await import("./commands/secret.ts")).registerSecret },
  { names: ["image"], load: async () => (await import("./commands/image.ts")).registerImage },
  { names: ["init"], load: async () => (await import("./commands/init.ts")).registerInit },
  { names: ["dev"], load: async () => (await import("./commands/dev.ts")).registerDev },
];

/** Each command sets this instead of calling process.exit, so output is flushed. */
export interface CommandContext {
  exitCode: number;
}

/**
 * The program with the commands `argv` may run: the one it names (the first word that is not
 * an option: the program itself takes only --help and --version), else all of them.
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
  const word = argv.find((a) => !a.startsWith("-"));
  const named = COMMANDS.filter((c) => word !== undefined && c.names.includes(word));
  const registers = await Promise.all((named.length ? named : COMMANDS).map((c) => c.load()));
  for (const register of registers) register(program, ctx);
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
