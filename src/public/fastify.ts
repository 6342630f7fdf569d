export { FastifyAppEnvironment, type FastifyLike } from "../sdk/frameworks.ts";
