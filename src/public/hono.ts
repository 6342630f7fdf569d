export { HonoAppEnvironment, type HonoLike } from "../sdk/frameworks.ts";
