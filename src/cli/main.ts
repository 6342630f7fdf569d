import { Command, CommanderError } from "commander";
import { reportError } from "./output.ts";
import { registerPlan } from "./commands/plan.ts";
import { registerGraph } from "./commands/graph.ts";
import { registerDeploy } from "./commands/deploy.ts";
import { registerServe } from "./commands/serve.ts";
import { registerStatus } from "./commands/status.ts";
import { registerLogs } from "./commands/logs.ts";
import { registerStopDelete } from "./commands/stop.ts";
import { registerServer } from "./commands/server.ts";
import { registerSecret } from "./commands/secret.ts";
import { registerRun } from "./commands/run.ts";
import { registerJob } from "./commands/job.ts";
import { registerToken } from "./commands/token.ts";
import { registerImage } from "./commands/image.ts";
import { registerInit } from "./commands/init.ts";
import { registerDev } from "./commands/dev.ts";
import { registerConsole } from "./commands/console.ts";
import { registerTraces } from "./commands/traces.ts";

/** Each command sets this instead of calling process.exit, so output is flushed. */
export interface CommandContext {
  exitCode: number;
}

export function buildProgram(ctx: CommandContext): Command {
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
  registerPlan(program, ctx);
  registerGraph(program, ctx);
  registerDeploy(program, ctx);
  registerServe(program, ctx);
  registerStatus(program, ctx);
  registerLogs(program, ctx);
  registerStopDelete(program, ctx);
  registerServer(program, ctx);
  registerRun(program, ctx);
  registerJob(program, ctx);
  registerToken(program, ctx);
  registerSecret(program, ctx);
  registerImage(program, ctx);
  registerInit(program, ctx);
  registerDev(program, ctx);
  registerConsole(program, ctx);
  registerTraces(program, ctx);
  for (const cmd of program.commands) cmd.exitOverride();
  return program;
}

/** Runs the CLI; returns the exit code (0 ok, 1 failure, 2 usage). */
export async function main(argv: string[]): Promise<number> {
  const ctx: CommandContext = { exitCode: 0 };
  const program = buildProgram(ctx);
  try {
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
