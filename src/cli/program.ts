/**
 * The CLI through commander: every run that is not a direct one (see direct.ts), and every
 * `--help`, listing and usage error.
 */
import { Command, CommanderError, Help } from "commander";
import { COMMANDS, nameOf, type CommandContext } from "./main.ts";

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

/** Parses `argv` with commander and runs its command; returns the exit code. */
export async function runProgram(ctx: CommandContext, argv: string[]): Promise<number> {
  try {
    const program = await buildProgram(ctx, argv);
    await program.parseAsync(argv, { from: "user" });
    return ctx.exitCode;
  } catch (e) {
    if (!(e instanceof CommanderError)) throw e;
    // Help and the version are printed; a usage error is (with how to get help).
    const printed = ["commander.helpDisplayed", "commander.version", "commander.help"];
    return printed.includes(e.code) ? 0 : 2;
  }
}
