/**
 * Commands declared as data, so that a run of one can skip commander: loading commander (and
 * the node:child_process it requires) is about a fifth of `caravan status`'s start-up. The
 * same declaration gives commander its command (for `--help`, listing and every error) and
 * `node:util`'s parseArgs its options, and a run whose arguments parseArgs takes without
 * complaint calls the command directly; anything else (`--help`, an unknown option, a missing
 * value, an argument) goes to commander, which says what is wrong as it does for every command.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import type { Command } from "commander";
import type { CommandContext } from "./main.ts";

/** `--name <value>` (a string) or `--name` (true when given), with an optional `-n, ` before. */
export type OptionSpec = [flags: string, description: string];

export interface CommandSpec<Options> {
  name: string;
  description: string;
  options: OptionSpec[];
  run(options: Options, ctx: CommandContext): Promise<void>;
}

/** Declares the command on commander's program: what every run but a direct one uses. */
export function registerSpec<O>(program: Command, spec: CommandSpec<O>, ctx: CommandContext) {
  const command = program.command(spec.name).description(spec.description);
  for (const [flags, description] of spec.options) command.option(flags, description);
  command.action((options: O) => spec.run(options, ctx));
}

const FLAGS = /^(?:-([a-zA-Z]), )?--([a-z][a-z0-9-]*)(?: <[a-z-]+>)?$/;

/** The spec's options for parseArgs, by their camel-cased names as commander gives them. */
export function parseArgsOptions(options: OptionSpec[]): NonNullable<ParseArgsConfig["options"]> {
  const out: NonNullable<ParseArgsConfig["options"]> = {};
  for (const [flags] of options) {
    const m = FLAGS.exec(flags);
    // Optional values, negations and variadics parse differently in commander: not here.
    if (!m || m[2]!.startsWith("no-"))
      throw new Error(`a direct command's option must be --name or --name <value>: ${flags}`);
    out[m[2]!] = { type: flags.includes("<") ? "string" : "boolean", ...(m[1] && { short: m[1] }) };
  }
  return out;
}

const camel = (name: string) => name.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/**
 * The options of `args` (what follows the command's name) as commander would give them, or
 * undefined when commander should handle the run (help, an error, anything unusual).
 */
export function parseDirect<O>(spec: CommandSpec<O>, args: string[]): O | undefined {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: parseArgsOptions(spec.options),
      strict: true,
      allowPositionals: true,
    });
  } catch {
    return undefined;
  }
  if (parsed.positionals.length > 0) return undefined;
  return Object.fromEntries(
    Object.entries(parsed.values).map(([name, value]) => [camel(name), value]),
  ) as O;
}
