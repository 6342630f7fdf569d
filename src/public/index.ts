// The `caravan` entry point: declarations, configuration and the programmatic API.
export {
  AppEnvironment,
  TaskEnvironment,
  JobEnvironment,
  Environment,
  isEnvironment,
  type AppEnvironmentOptions,
  type EnvironmentOptions,
  type EnvironmentKind,
  type Scaling,
  type Timeouts,
  type Port,
  type Link,
  type Ingress,
  type Readiness,
  type SecretRef,
  type SoftDependency,
  type Task,
  type TaskOptions,
  type JobEnvironmentOptions,
  type JobContext,
} from "../sdk/environment.ts";
export { Image } from "../sdk/image.ts";
export { Input, AppEndpoint, RunOutput, File, Dir, type InputValue } from "../sdk/inputs.ts";
export type { Resources } from "../sdk/resources.ts";
export type { KubernetesOptions } from "../sdk/kubernetes.ts";
export { getInput, inRuntime } from "../sdk/context.ts";
export { init, type CaravanConfig } from "../sdk/config.ts";
export { CaravanError, isCaravanError, type ErrorCode } from "../errors.ts";
export { plan, deploy, Deployment, type DeployOptions } from "../api.ts";
export { run, task, type TaskRef, type RunRecord } from "../runs.ts";
