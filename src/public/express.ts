export { ExpressAppEnvironment, type ExpressLike } from "../sdk/frameworks.ts";
