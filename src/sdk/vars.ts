import { CaravanError } from "../errors.ts";

/**
 * Expands `$PORT`, `${PORT}`, `$NAME` and any defined variable in a command app's argument.
 * An unknown `${X}` (or `$PORT`/`$NAME` missing) is an error naming the variable; an unknown
 * bare `$X` is left as written (for a shell the command may run).
 */
export function expandVars(arg: string, vars: Record<string, string>, app: string): string {
  return arg.replace(
    /\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)/g,
    (whole, braced: string, bare: string) => {
      const name = braced ?? bare;
      const value = vars[name];
      if (value !== undefined) return value;
      if (bare !== undefined && !["PORT", "NAME"].includes(bare)) return whole;
      throw new CaravanError(
        "UNKNOWN_VARIABLE",
        `app "${app}": argument ${JSON.stringify(arg)} uses \${${name}}, which is not defined; defined: ${Object.keys(vars).sort().join(", ")} (declare it in envVars or as an input's envVar; secrets are not expanded in arguments, read them from the environment)`,
        { app, variable: name },
      );
    },
  );
}

/** The environment variable that carries a dependency's internal endpoint. */
export function endpointVar(dep: string): string {
  return `CARAVAN_ENDPOINT_${dep.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
}
