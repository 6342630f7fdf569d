// What code inside a running app may use.
export { getInput, inRuntime } from "../sdk/context.ts";
