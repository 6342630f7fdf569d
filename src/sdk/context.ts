import { CaravanError } from "../errors.ts";
import { shared } from "./global.ts";

/**
 * The value of an input, inside a running app (the seed's `flyte.app.get_input`).
 * @example const backend = getInput("backend_url");
 */
export function getInput<T = string>(name: string): T {
  const runtime = shared().runtime;
  if (!runtime) {
    throw new CaravanError(
      "NOT_IN_RUNTIME",
      `getInput("${name}") only works inside an app deployed by caravan (its inputs are provided at start); call it from a request handler or start-up code, not while planning`,
    );
  }
  if (!(name in runtime.inputs)) {
    const known = Object.keys(runtime.inputs);
    throw new CaravanError(
      "UNKNOWN_INPUT",
      `app "${runtime.name}" has no input "${name}"; ${known.length ? `its inputs are: ${known.join(", ")}` : "it declares no inputs"}`,
      { input: name, known },
    );
  }
  return runtime.inputs[name] as T;
}

/** True inside an app or task process started by caravan. */
export function inRuntime(): boolean {
  return shared().runtime !== undefined;
}
