// What code inside a running app may use.
export { getInput, inRuntime } from "../sdk/context.ts";
export { run, task, type TaskRef } from "../runs.ts";
