import { CaravanError, describeValue } from "../errors.ts";
import { ENV_BRAND, shared } from "./global.ts";
import { Image } from "./image.ts";
import { getInput } from "./context.ts";
import { checkInputs, type Input } from "./inputs.ts";
import { parameterNames } from "./serialize.ts";
import { normalizeResources, type NormalizedResources, type Resources } from "./resources.ts";
import type { AppSpec, EnvironmentSpec, InputSpec, JobSpec, TaskSpec } from "./spec.ts";
import { validateKubernetesOptions, type KubernetesOptions } from "./kubernetes.ts";
import { formatSite, lazyCallerSite, type Site } from "./site.ts";
import {
  fail,
  isPlainObject,
  reservedSecretEnv,
  validateEnvVarName,
  validateEnvVars,
  validateName,
  validatePort,
} from "./validation.ts";

export type EnvironmentKind = "app" | "task" | "job";

/** A dependency that orders and wires without waiting: `{ env: cache, wait: false }`. */
export interface SoftDependency {
  env: Environment;
  wait: boolean;
}

/** A secret injected as an environment variable: `"API_KEY"` or `{ key, envVar }`. */
export type SecretRef = string | { key: string; envVar?: string };

/** Fields every environment has. */
export interface EnvironmentOptions {
  /** DNS-1123 label, at most 63 characters: `"backend-api"`. */
  name: string;
  /**
   * Environments deployed (and ready) before this one starts. `{ env, wait: false }` is a soft
   * dependency: this one starts once it is being deployed (its endpoint is known), without
   * waiting for it to be ready, and is not skipped when it fails (only degraded).
   */
  dependsOn?: (Environment | SoftDependency)[];
  image?: Image;
  resources?: Resources;
  /** Plain environment variables for the process. */
  envVars?: Record<string, string>;
  /**
   * `false`: caravan's runtime does not trace this environment's requests, calls and task
   * runs, and `OTEL_SDK_DISABLED=true` turns off any OpenTelemetry SDK in it.
   * @default true
   */
  tracing?: boolean;
  secrets?: SecretRef[];
  description?: string;
  /** Settings only the kubernetes backend reads (the local backend ignores them). */
  kubernetes?: KubernetesOptions;
}

/** @example { replicas: [1, 3], scaledownAfter: 300 } */
export interface Scaling {
  /** `[min, max]` replicas, or one number for a fixed count. @default [0, 1] */
  replicas?: [number, number] | number;
  /** In-flight requests per replica before another is added. */
  concurrency?: number;
  /** Seconds of low load before a replica is removed. @default 900 */
  scaledownAfter?: number;
}

export interface Timeouts {
  /** Seconds a request may take, 0–3600. */
  request?: number;
  /** Seconds an app may take to become ready. @default 60 */
  start?: number;
}

export interface Port {
  port: number;
  name?: string;
}

export interface Link {
  path: string;
  title: string;
  isRelative?: boolean;
}

/** The seed SDK's `domain` setting: how the app is reached from outside. */
export interface Ingress {
  subdomain?: string;
  customDomain?: string;
}

export interface Readiness {
  /** HTTP path that must answer 2xx; without it, a TCP connect and any HTTP answer suffice. */
  path?: string;
  /** Ready as soon as the port accepts a TCP connection (for a server slow to answer HTTP). */
  tcp?: boolean;
}

export interface AppEnvironmentOptions<
  InputName extends string = string,
> extends EnvironmentOptions {
  /** The port the app listens on inside its process. @default 8080 */
  port?: number | Port;
  /** A command to run instead of a served JS app (any language). `$PORT`, `$NAME` expand. */
  command?: string | string[];
  args?: string[];
  scaling?: Scaling;
  timeouts?: Timeouts;
  links?: Link[];
  /** Files (relative to the declaring file) a command app needs at run time. */
  include?: string[];
  ingress?: Ingress;
  /** Whether the public endpoint needs a token. @default true */
  requiresAuth?: boolean;
  inputs?: Input<InputName>[];
  readiness?: Readiness;
  /**
   * A check of each serving replica, every `intervalS` seconds (default 10): an HTTP 2xx on
   * `path`, or a TCP connect (`tcp: true`). After `failures` (default 3) in a row the replica
   * is restarted.
   */
  liveness?: Readiness & { intervalS?: number; failures?: number };
}

/**
 * How an app is served: by caravan's runtime (a framework, or a server function) or as a
 * command.
 */
export type ServeKind = "fastify" | "hono" | "express" | "function" | "command";

/** What a server function and the start-up/shutdown hooks are given. */
export interface ServerContext {
  /** The port to listen on (the app's endpoint points at it). */
  port: number;
  /** The interface to listen on. */
  host: string;
  /** The app's inputs by name (File/Dir inputs: the path of their copy). */
  inputs: Record<string, unknown>;
}

/**
 * A server function: starts a server on `port`. It may return once it listens (optionally
 * with a handle `{ close() }` for shutdown) or run until shutdown; either way the app is ready
 * when the port answers HTTP.
 */
export type ServerFunction = (ctx: ServerContext) => unknown;
/** A start-up or shutdown hook. */
export type LifecycleHook = (ctx: ServerContext) => unknown;

/** A running server the runtime can close gracefully. */
export interface ServerHandle {
  close(): Promise<void>;
}

const COMMON_KEYS = [
  "kubernetes",
  "name",
  "dependsOn",
  "image",
  "resources",
  "envVars",
  "tracing",
  "secrets",
  "description",
];
const APP_KEYS = [
  ...COMMON_KEYS,
  "port",
  "command",
  "args",
  "scaling",
  "timeouts",
  "links",
  "include",
  "ingress",
  "requiresAuth",
  "inputs",
  "readiness",
  "liveness",
  "app",
];

/**
 * Base of every environment. Not constructed directly: use `AppEnvironment`,
 * `TaskEnvironment` or a framework flavour.
 */
export abstract class Environment {
  abstract readonly [ENV_BRAND]: EnvironmentKind;
  readonly name: string;
  readonly dependsOn: Environment[] = [];
  /** Names of the dependencies declared with `wait: false`. */
  readonly softDependencies = new Set<string>();
  readonly image?: Image;
  readonly resources?: NormalizedResources;
  readonly envVars: Record<string, string>;
  readonly tracing: boolean = true;
  readonly secrets: { key: string; envVar: string }[];
  readonly description?: string;
  readonly kubernetes?: KubernetesOptions;
  /** Where this environment was declared, for error messages (found when first asked). */
  get declaredAt(): Site | undefined {
    return this.site();
  }
  private readonly site: () => Site | undefined;
  /** The class name users wrote (`FastifyAppEnvironment`...), for messages. */
  protected readonly typeLabel: string;

  protected constructor(opts: EnvironmentOptions, what: string, allowedKeys: string[]) {
    this.typeLabel = what;
    if (!isPlainObject(opts))
      fail("VALIDATION", what, `expected an options object, got ${describeValue(opts)}`);
    this.name = validateName(opts.name, what);
    const where = `${what} "${this.name}"`;
    for (const key of Object.keys(opts)) {
      if (!allowedKeys.includes(key)) {
        fail(
          "VALIDATION",
          where,
          `unknown option "${key}"; known options: ${allowedKeys.join(", ")}`,
        );
      }
    }
    this.site = lazyCallerSite();
    if (
      opts.image !== undefined &&
      !(opts.image instanceof Image) &&
      typeof (opts.image as Image)?.dockerfile !== "function"
    ) {
      fail(
        "VALIDATION",
        where,
        `image must be an Image (Image.fromDebianBase(...)), got ${describeValue(opts.image)}`,
      );
    }
    if (opts.image) this.image = opts.image;
    const resources = normalizeResources(opts.resources, where);
    if (resources) this.resources = resources;
    this.envVars = validateEnvVars(opts.envVars, where);
    if (opts.tracing !== undefined) {
      if (typeof opts.tracing !== "boolean")
        fail(
          "VALIDATION",
          where,
          `tracing must be true or false, got ${describeValue(opts.tracing)}`,
        );
      this.tracing = opts.tracing;
    }
    this.secrets = normalizeSecrets(opts.secrets, where);
    if (opts.description !== undefined) this.description = String(opts.description);
    if (opts.kubernetes !== undefined)
      this.kubernetes = validateKubernetesOptions(opts.kubernetes, where);
    if (opts.dependsOn !== undefined) {
      if (!Array.isArray(opts.dependsOn)) {
        fail(
          "INVALID_DEPENDENCY",
          where,
          `dependsOn must be an array of environments, got ${describeValue(opts.dependsOn)}`,
        );
      }
      this.addDependency(...opts.dependsOn);
    }
  }

  /** Called last by concrete constructors, so a half-validated environment is never discovered. */
  protected register(): void {
    shared().environments.push(this);
  }

  get kind(): EnvironmentKind {
    return this[ENV_BRAND];
  }

  /** Adds dependencies after construction (as the seed SDK's `add_dependency`). */
  addDependency(...deps: (Environment | SoftDependency)[]): this {
    const envs = deps.map((dep) => {
      if (isEnvironment(dep)) return dep;
      const soft = dep as SoftDependency | undefined;
      if (isPlainObject(soft) && isEnvironment(soft.env) && typeof soft.wait === "boolean") {
        if (!soft.wait) this.softDependencies.add(soft.env.name);
        return soft.env;
      }
      return dep as unknown as Environment;
    });
    envs.forEach((dep, i) => {
      if (!isEnvironment(dep)) {
        throw new CaravanError(
          "INVALID_DEPENDENCY",
          `${this.typeLabel} "${this.name}": dependsOn[${this.dependsOn.length + i}] is not an environment: ${describeValue(dep)}. Pass the environment object itself, e.g. dependsOn: [backendEnv], or { env: backendEnv, wait: false }`,
          { value: describeValue(dep) },
        );
      }
    });
    for (const dep of envs) if (!this.dependsOn.includes(dep)) this.dependsOn.push(dep);
    return this;
  }

  /** The normalised declaration (no functions, no app objects): what the plan hashes. */
  abstract spec(): EnvironmentSpec;

  /** The fields every kind of environment has, for `spec()`. */
  protected commonSpec() {
    return {
      name: this.name,
      dependsOn: this.dependsOn.map((d) => d.name).sort(),
      // Only when there are any: specs (and revisions) without them stay what they were.
      ...(this.softDependencies.size ? { softDependsOn: [...this.softDependencies].sort() } : {}),
      image: this.image?.toJSON(),
      resources: this.resources,
      envVars: this.envVars,
      ...(this.tracing ? {} : { tracing: false as const }),
      secrets: this.secrets,
      description: this.description,
      kubernetes: this.kubernetes,
    };
  }

  toString(): string {
    return `${this.typeLabel}(${this.name}) declared at ${formatSite(this.declaredAt)}`;
  }
}

/**
 * A long-running HTTP service.
 * @example
 * const api = new AppEnvironment({ name: "api", command: ["python3", "-m", "http.server", "$PORT"] });
 */
export class AppEnvironment<InputName extends string = string> extends Environment {
  readonly [ENV_BRAND] = "app" as const;
  readonly port: Port;
  private readonly portDeclared: boolean;
  readonly command?: string[];
  readonly args: string[];
  readonly scaling: {
    replicas: [number, number];
    concurrency?: number;
    scaledownAfter: number;
    /** The replicas were given (not the seed's default [0, 1]): a cluster refuses a min of 0. */
    replicasDeclared?: true;
  };
  readonly timeouts: { request?: number; start: number };
  readonly links: Link[];
  readonly include: string[];
  readonly ingress?: Ingress;
  readonly requiresAuth: boolean;
  readonly inputs: Input<InputName>[];
  readonly readiness: Readiness;
  readonly liveness?: { path?: string; tcp?: boolean; intervalS: number; failures: number };

  /**
   * Where `server()`, `onStartup()` and `onShutdown()` were called from (found when asked): an
   * app given them by another module than its own needs that module too (`ownModule`).
   */
  private readonly configuredAt: (() => Site | undefined)[] = [];

  constructor(opts: AppEnvironmentOptions<InputName>) {
    super(opts, new.target?.name ?? "AppEnvironment", APP_KEYS);
    const where = `${new.target?.name ?? "AppEnvironment"} "${this.name}"`;
    this.port = normalizePort(opts.port, where);
    this.portDeclared = opts.port !== undefined;
    const command = normalizeCommand(opts.command, where);
    if (command) this.command = command;
    this.args = normalizeArgs(opts.args, where);
    this.scaling = normalizeScaling(opts.scaling, where);
    this.timeouts = normalizeTimeouts(opts.timeouts, where);
    this.links = opts.links ?? [];
    this.include = normalizeInclude(opts.include, where);
    if (opts.ingress) this.ingress = opts.ingress;
    this.requiresAuth = opts.requiresAuth ?? true;
    if (typeof this.requiresAuth !== "boolean")
      fail(
        "VALIDATION",
        where,
        `requiresAuth must be true or false, got ${describeValue(opts.requiresAuth)}`,
      );
    this.inputs = checkInputs(opts.inputs, where) as Input<InputName>[];
    if (opts.readiness !== undefined) {
      const path = opts.readiness?.path;
      const tcp = opts.readiness?.tcp;
      if (
        !isPlainObject(opts.readiness) ||
        (path !== undefined && (typeof path !== "string" || !path.startsWith("/"))) ||
        (tcp !== undefined && typeof tcp !== "boolean") ||
        (tcp === true && path !== undefined)
      ) {
        fail(
          "VALIDATION",
          where,
          `readiness must be { path: "/healthz" } (a path starting with "/") or { tcp: true }, got ${describeValue(opts.readiness)}`,
        );
      }
    }
    this.readiness = opts.readiness ?? {};
    if (opts.liveness !== undefined) this.liveness = normalizeLiveness(opts.liveness, where);
    this.register();
  }

  private serverFunction?: ServerFunction;
  /** @internal run by the runtime before serving, in order. */
  readonly startupHooks: LifecycleHook[] = [];
  /** @internal run by the runtime on stop, after the server closed, in order. */
  readonly shutdownHooks: LifecycleHook[] = [];

  /** How this app is served. Framework flavours override it. */
  get serveKind(): ServeKind {
    return this.serverFunction ? "function" : "command";
  }

  /**
   * Serves this app with a function that starts a server on `port` (any Node.js server).
   * The app is ready once the port answers HTTP. Returns `fn`.
   * @example
   * env.server(async ({ port, host }) => {
   *   const server = http.createServer(handler).listen(port, host);
   *   return { close: () => new Promise((r) => server.close(r)) };
   * });
   */
  server<F extends ServerFunction>(fn: F): F {
    const where = `${this.typeLabel} "${this.name}"`;
    if (typeof fn !== "function")
      fail("VALIDATION", where, `server() needs a function, got ${describeValue(fn)}`);
    if (this.command)
      fail(
        "VALIDATION",
        where,
        "has a command; an app is served by a command or a server function, not both",
      );
    if (this.serveKind !== "command" && this.serveKind !== "function")
      fail(
        "VALIDATION",
        where,
        `is served by its ${this.serveKind} app; server() is for a plain AppEnvironment`,
      );
    if (this.serverFunction) fail("VALIDATION", where, "server() was already given a function");
    this.serverFunction = fn;
    this.configuredAt.push(lazyCallerSite());
    return fn;
  }

  /**
   * The module whose evaluation (with what it imports) gives this app everything it runs, when
   * there is one: it was declared at the top level of that module and given its server and
   * hooks there. A process of the app may then evaluate that module alone (its own bundle).
   * Code another module adds to it otherwise (routes on its framework instance) is not seen.
   */
  get ownModule(): string | undefined {
    const site = this.declaredAt;
    if (!site?.byItsModule || this.command) return undefined;
    return this.configuredAt.every((at) => at()?.file === site.file) ? site.file : undefined;
  }

  /** Runs `fn` when the app starts, before it serves (the seed's `on_startup`). Returns `fn`. */
  onStartup<F extends LifecycleHook>(fn: F): F {
    return this.addHook(this.startupHooks, fn, "onStartup");
  }

  /** Runs `fn` when the app stops, after its server closed (the seed's `on_shutdown`). Returns `fn`. */
  onShutdown<F extends LifecycleHook>(fn: F): F {
    return this.addHook(this.shutdownHooks, fn, "onShutdown");
  }

  private addHook<F extends LifecycleHook>(hooks: LifecycleHook[], fn: F, what: string): F {
    if (typeof fn !== "function")
      fail(
        "VALIDATION",
        `${this.typeLabel} "${this.name}"`,
        `${what}() needs a function, got ${describeValue(fn)}`,
      );
    hooks.push(fn);
    this.configuredAt.push(lazyCallerSite());
    return fn;
  }

  /**
   * This app's URL. Inside a running app that depends on it: its internal endpoint. In a
   * script after `deploy()`: the deployed endpoint. Anywhere else it is not known yet.
   */
  /**
   * The value of one of this app's inputs, inside its running process; the name is checked
   * against the declared inputs at compile time (`getInput(name)` is the untyped form).
   * @example backendEnv.input("backend_url")
   */
  input(name: InputName): string {
    const runtime = shared().runtime;
    if (runtime && runtime.name !== this.name) {
      throw new CaravanError(
        "NOT_IN_RUNTIME",
        `the inputs of app "${this.name}" are only available in its own process (this is "${runtime.name}")`,
      );
    }
    return getInput<string>(name);
  }

  get endpoint(): string {
    const state = shared();
    const fromRuntime = state.runtime?.endpoints[this.name];
    if (fromRuntime) return fromRuntime;
    const deployed = state.deployedEndpoints.get(this.name);
    if (deployed) return state.runtime ? deployed.internalEndpoint : deployed.endpoint;
    const inside = state.runtime
      ? `app "${state.runtime.name}" does not depend on it; add it to dependsOn`
      : "deploy it first (caravan deploy, or await deploy(env) in a script)";
    throw new CaravanError(
      "ENDPOINT_UNKNOWN",
      `the endpoint of app "${this.name}" is not known here: ${inside}`,
      { app: this.name },
    );
  }

  /**
   * Starts serving on `port` (used by caravan's runtime inside the app's process).
   * @internal
   */
  async serveOn(port: number, host: string): Promise<ServerHandle> {
    const fn = this.serverFunction;
    if (fn) {
      const { shared } = await import("./global.ts");
      const { waitForPort } = await import("./probe.ts");
      let failed: unknown;
      let settled = false;
      let returned: unknown;
      const running = Promise.resolve()
        .then(() => fn({ port, host, inputs: { ...(shared().runtime?.inputs ?? {}) } }))
        .then(
          (value) => {
            settled = true;
            returned = value;
          },
          (e: unknown) => {
            settled = true;
            failed = e ?? new Error("the server function failed");
          },
        );
      await Promise.race([
        waitForPort(port, host, () => failed !== undefined),
        running.then(() => {
          if (failed !== undefined) throw failed;
          return new Promise<never>(() => {}); // returned: wait for the port
        }),
      ]);
      return {
        close: async () => {
          if (!settled) return;
          const handle = returned as { close?: () => unknown } | undefined;
          if (handle && typeof handle.close === "function") await handle.close();
        },
      };
    }
    throw new CaravanError(
      "VALIDATION",
      `AppEnvironment "${this.name}" has nothing to serve: give it a command or a server function (env.server(fn)), or use FastifyAppEnvironment / HonoAppEnvironment / ExpressAppEnvironment with an app`,
    );
  }

  override spec(): AppSpec {
    return {
      kind: "app",
      ...this.commonSpec(),
      serveKind: this.serveKind,
      // A port given (not the default) is marked: a local command app cannot honour one.
      port: this.portDeclared ? { ...this.port, declared: true } : this.port,
      command: this.command,
      args: this.args,
      scaling: this.scaling,
      timeouts: this.timeouts,
      links: this.links,
      include: this.include,
      ingress: this.ingress,
      requiresAuth: this.requiresAuth,
      inputs: this.inputs.map((i) => i.toJSON() as InputSpec),
      readiness: this.readiness,
      ...(this.liveness ? { liveness: this.liveness } : {}),
    };
  }
}

export interface TaskOptions {
  /** @default the function's name */
  name?: string;
  /** @default 0 */
  retries?: number;
  /** Seconds. */
  timeout?: number;
  concurrency?: number;
}

/**
 * A registered task, identified as `<env>.<name>`. Calling it runs the function here, in this
 * process; `run(task, ...args)` runs it on the control plane, in a worker of its environment.
 */
export type Task<A extends unknown[] = unknown[], R = unknown> = ((
  ...args: A
) => Promise<Awaited<R>>) & {
  readonly id: string;
  readonly taskName: string;
  readonly environment: TaskEnvironment;
  readonly options: Readonly<Omit<TaskOptions, "name">>;
  /** Parameter names read from the function's source (for `caravan run --input name=value`). */
  readonly parameters: readonly (string | undefined)[];
};

/**
 * A place where tasks run. Apps may depend on it: it is ready when its tasks are registered.
 * @example
 * const training = new TaskEnvironment({ name: "training-env" });
 * export const train = training.task(async function train(epochs: number) { return { epochs }; });
 */
export class TaskEnvironment extends Environment {
  readonly [ENV_BRAND] = "task" as const;
  readonly tasks = new Map<string, Task<any[], any>>();

  constructor(opts: EnvironmentOptions) {
    super(opts, "TaskEnvironment", COMMON_KEYS);
    this.register();
  }

  task<A extends unknown[], R>(fn: (...args: A) => R, options: TaskOptions = {}): Task<A, R> {
    const where = `TaskEnvironment "${this.name}"`;
    if (typeof fn !== "function")
      fail("VALIDATION", where, `task() needs a function, got ${describeValue(fn)}`);
    const taskName = options.name ?? fn.name;
    if (!taskName || !/^[A-Za-z_][A-Za-z0-9_-]*$/.test(taskName)) {
      fail(
        "VALIDATION",
        where,
        `task name ${describeValue(taskName)} is not valid: name the function or pass { name: "train" }`,
      );
    }
    if (this.tasks.has(taskName))
      fail("VALIDATION", where, `task "${taskName}" is registered twice`);
    for (const key of ["retries", "timeout", "concurrency"] as const) {
      const v = options[key];
      if (v !== undefined && (typeof v !== "number" || !(v >= 0))) {
        fail(
          "VALIDATION",
          `${where} task "${taskName}"`,
          `${key} must be a non-negative number, got ${describeValue(v)}`,
        );
      }
    }
    const call = async (...args: A) => await fn(...args);
    const { name: _name, ...rest } = options;
    const task = Object.assign(call, {
      id: `${this.name}.${taskName}`,
      taskName,
      environment: this,
      options: rest,
      parameters: parameterNames(fn as (...args: never[]) => unknown),
    }) as Task<A, R>;
    this.tasks.set(taskName, task as Task<any[], any>);
    return task;
  }

  override spec(): TaskSpec {
    return {
      kind: "task",
      ...this.commonSpec(),
      tasks: [...this.tasks.values()]
        .map((t) => ({ id: t.id, ...t.options }))
        .sort((a, b) => a.id.localeCompare(b.id)),
    };
  }
}

/** What a job is given when it runs as a function (`run: async (ctx) => …`). */
export interface JobContext {
  /** The job's inputs by name (File/Dir inputs: the path of their copy). */
  inputs: Record<string, unknown>;
  /** Internal endpoints of the apps it depends on, by name. */
  endpoints: Record<string, string>;
}

export type JobFunction = (ctx: JobContext) => unknown;

export interface JobEnvironmentOptions<
  InputName extends string = string,
> extends EnvironmentOptions {
  /** A command to run (any language); `${VAR}` and `$NAME` expand. Give this or `run`. */
  command?: string | string[];
  args?: string[];
  /** A TypeScript function to run (in caravan's runtime); it succeeds when it resolves. */
  run?: JobFunction;
  /** Files (relative to the declaring file) a command job needs at run time. */
  include?: string[];
  inputs?: Input<InputName>[];
  /** Attempts after a failed one. @default 0 */
  retries?: number;
  timeouts?: {
    /** Seconds one attempt may take. @default 600 */
    run?: number;
  };
}

const JOB_KEYS = [
  ...COMMON_KEYS,
  "command",
  "args",
  "run",
  "include",
  "inputs",
  "retries",
  "timeouts",
];

/**
 * One-shot work that must succeed before what depends on it starts: a migration, a seed, an
 * index build. It runs again only when its revision changes (spec, code, inputs, dependency
 * endpoints, secrets); otherwise its last success counts.
 * @example
 * const migrate = new JobEnvironment({ name: "migrate", command: ["node", "migrate.mjs"], dependsOn: [db] });
 * const api = new AppEnvironment({ name: "api", command: "node api.mjs", dependsOn: [migrate] });
 */
export class JobEnvironment<InputName extends string = string> extends Environment {
  readonly [ENV_BRAND] = "job" as const;
  readonly command?: string[];
  readonly args: string[];
  readonly include: string[];
  readonly inputs: Input<InputName>[];
  readonly retries: number;
  readonly timeouts: { run: number };
  /** @internal the function the runtime calls, for a function job. */
  readonly runFunction?: JobFunction;

  constructor(opts: JobEnvironmentOptions<InputName>) {
    super(opts, "JobEnvironment", JOB_KEYS);
    const where = `JobEnvironment "${this.name}"`;
    const command = normalizeCommand(opts.command, where);
    if (command) this.command = command;
    if (opts.run !== undefined && typeof opts.run !== "function")
      fail("VALIDATION", where, `run must be a function, got ${describeValue(opts.run)}`);
    if (opts.run) this.runFunction = opts.run;
    if (!command === !opts.run) {
      fail(
        "VALIDATION",
        where,
        command
          ? "has both a command and a run function; give one"
          : 'needs something to run: a command (command: ["node", "migrate.mjs"]) or a function (run: async (ctx) => { ... })',
      );
    }
    this.args = normalizeArgs(opts.args, where);
    if (opts.args?.length && !command)
      fail("VALIDATION", where, "args are for a command job; a run function takes its inputs");
    this.include = normalizeInclude(opts.include, where);
    this.inputs = checkInputs(opts.inputs, where) as Input<InputName>[];
    const retries = opts.retries ?? 0;
    if (!Number.isInteger(retries) || retries < 0 || retries > 100)
      fail(
        "VALIDATION",
        where,
        `retries must be a whole number 0-100, got ${describeValue(retries)}`,
      );
    this.retries = retries;
    const t = opts.timeouts;
    if (t !== undefined && (!isPlainObject(t) || Object.keys(t).some((k) => k !== "run")))
      fail(
        "INVALID_TIMEOUT",
        where,
        `timeouts must be { run } in seconds, got ${describeValue(t)}`,
      );
    const run = t?.run ?? 600;
    if (typeof run !== "number" || !(run > 0 && run <= 86_400))
      fail(
        "INVALID_TIMEOUT",
        where,
        `timeouts.run must be more than 0 and at most 86400 seconds, got ${describeValue(run)}`,
      );
    this.timeouts = { run };
    this.register();
  }

  override spec(): JobSpec {
    return {
      kind: "job",
      ...this.commonSpec(),
      runKind: this.command ? "command" : "function",
      command: this.command,
      args: this.args,
      include: this.include,
      inputs: this.inputs.map((i) => i.toJSON() as InputSpec),
      retries: this.retries,
      timeouts: this.timeouts,
    };
  }
}

/** True for any caravan environment, from any copy of the package. */
export function isEnvironment(value: unknown): value is Environment {
  if (!value || typeof value !== "object") return false;
  const brand = (value as Record<symbol, unknown>)[ENV_BRAND];
  return brand === "app" || brand === "task" || brand === "job";
}

export function isJobEnvironment(value: unknown): value is JobEnvironment {
  return isEnvironment(value) && value.kind === "job";
}

/** An environment whose process gets inputs and files: an app or a job. */
export function hasInputs(value: unknown): value is AppEnvironment | JobEnvironment {
  return isAppEnvironment(value) || isJobEnvironment(value);
}

export function isTaskEnvironment(value: unknown): value is TaskEnvironment {
  return isEnvironment(value) && value.kind === "task";
}

export function isAppEnvironment(value: unknown): value is AppEnvironment {
  return isEnvironment(value) && value.kind === "app";
}

function normalizeLiveness(
  liveness: unknown,
  where: string,
): NonNullable<AppEnvironment["liveness"]> {
  const l = liveness as Record<string, unknown>;
  const path = l?.path;
  const tcp = l?.tcp;
  const intervalS = l?.intervalS ?? 10;
  const failures = l?.failures ?? 3;
  if (
    !isPlainObject(liveness) ||
    Object.keys(l).some((k) => !["path", "tcp", "intervalS", "failures"].includes(k)) ||
    (path !== undefined && (typeof path !== "string" || !path.startsWith("/"))) ||
    (tcp !== undefined && typeof tcp !== "boolean") ||
    (tcp === true && path !== undefined) ||
    typeof intervalS !== "number" ||
    !(intervalS > 0 && intervalS <= 3600) ||
    !Number.isInteger(failures) ||
    !((failures as number) >= 1 && (failures as number) <= 100)
  ) {
    fail(
      "VALIDATION",
      where,
      `liveness must be { path: "/healthz" } or { tcp: true }, with intervalS (seconds, > 0) and failures (1-100), got ${describeValue(liveness)}`,
    );
  }
  return {
    ...(path !== undefined ? { path: path as string } : {}),
    ...(tcp !== undefined ? { tcp: tcp as boolean } : {}),
    intervalS: intervalS as number,
    failures: failures as number,
  };
}

function normalizeCommand(command: unknown, where: string): string[] | undefined {
  if (command === undefined) return undefined;
  const cmd = typeof command === "string" ? command.split(/\s+/).filter(Boolean) : command;
  if (!Array.isArray(cmd) || cmd.length === 0 || cmd.some((c) => typeof c !== "string")) {
    fail(
      "VALIDATION",
      where,
      `command must be a non-empty string or array of strings, got ${describeValue(command)}`,
    );
  }
  return cmd as string[];
}

function normalizeArgs(args: unknown, where: string): string[] {
  if (args !== undefined && (!Array.isArray(args) || args.some((a) => typeof a !== "string")))
    fail("VALIDATION", where, `args must be an array of strings, got ${describeValue(args)}`);
  return (args as string[] | undefined) ?? [];
}

function normalizeInclude(include: unknown, where: string): string[] {
  if (
    include !== undefined &&
    (!Array.isArray(include) || include.some((a) => typeof a !== "string"))
  )
    fail("VALIDATION", where, `include must be an array of paths, got ${describeValue(include)}`);
  return (include as string[] | undefined) ?? [];
}

function normalizePort(port: unknown, where: string): Port {
  if (port === undefined) return { port: 8080 };
  if (typeof port === "number") return { port: validatePort(port, where) };
  if (isPlainObject(port)) {
    const out: Port = { port: validatePort(port.port, where) };
    if (port.name !== undefined) out.name = String(port.name);
    return out;
  }
  return fail(
    "INVALID_PORT",
    where,
    `port must be a number or { port, name }, got ${describeValue(port)}`,
    port,
  );
}

function normalizeScaling(scaling: unknown, where: string): AppEnvironment["scaling"] {
  if (scaling === undefined) return { replicas: [0, 1], scaledownAfter: 900 };
  if (!isPlainObject(scaling))
    fail(
      "INVALID_SCALING",
      where,
      `scaling must be { replicas: [min, max] }, got ${describeValue(scaling)}`,
    );
  let replicas: [number, number] = [0, 1];
  if (typeof scaling.replicas === "number") replicas = [scaling.replicas, scaling.replicas];
  else if (Array.isArray(scaling.replicas) && scaling.replicas.length === 2)
    replicas = scaling.replicas as [number, number];
  else if (scaling.replicas !== undefined) {
    fail(
      "INVALID_SCALING",
      where,
      `scaling.replicas must be [min, max] or a number, got ${describeValue(scaling.replicas)}`,
      scaling.replicas,
    );
  }
  const [min, max] = replicas;
  if (!Number.isInteger(min) || !Number.isInteger(max) || min < 0 || min > max || max < 1) {
    fail(
      "INVALID_SCALING",
      where,
      `scaling.replicas ${describeValue(scaling.replicas)} breaks the rule 0 <= min <= max and max >= 1 (whole numbers)`,
      scaling.replicas,
    );
  }
  const out: AppEnvironment["scaling"] = { replicas: [min, max], scaledownAfter: 900 };
  if (scaling.replicas !== undefined) out.replicasDeclared = true;
  if (scaling.concurrency !== undefined) {
    if (
      typeof scaling.concurrency !== "number" ||
      !Number.isInteger(scaling.concurrency) ||
      scaling.concurrency < 1
    ) {
      fail(
        "INVALID_SCALING",
        where,
        `scaling.concurrency must be a whole number >= 1, got ${describeValue(scaling.concurrency)}`,
      );
    }
    out.concurrency = scaling.concurrency;
  }
  if (scaling.scaledownAfter !== undefined) {
    if (typeof scaling.scaledownAfter !== "number" || !(scaling.scaledownAfter >= 0)) {
      fail(
        "INVALID_SCALING",
        where,
        `scaling.scaledownAfter must be seconds >= 0, got ${describeValue(scaling.scaledownAfter)}`,
      );
    }
    out.scaledownAfter = scaling.scaledownAfter;
  }
  return out;
}

function normalizeTimeouts(timeouts: unknown, where: string): AppEnvironment["timeouts"] {
  if (timeouts === undefined) return { start: 60 };
  if (!isPlainObject(timeouts))
    fail(
      "INVALID_TIMEOUT",
      where,
      `timeouts must be { request?, start? } in seconds, got ${describeValue(timeouts)}`,
    );
  const out: AppEnvironment["timeouts"] = { start: 60 };
  if (timeouts.request !== undefined) {
    const r = timeouts.request;
    if (typeof r !== "number" || !(r >= 0 && r <= 3600)) {
      fail(
        "INVALID_TIMEOUT",
        where,
        `timeouts.request must be between 0 and 3600 seconds, got ${describeValue(r)}`,
        r,
      );
    }
    out.request = r;
  }
  if (timeouts.start !== undefined) {
    const s = timeouts.start;
    if (typeof s !== "number" || !(s > 0 && s <= 3600)) {
      fail(
        "INVALID_TIMEOUT",
        where,
        `timeouts.start must be more than 0 and at most 3600 seconds, got ${describeValue(s)}`,
        s,
      );
    }
    out.start = s;
  }
  return out;
}

function normalizeSecrets(secrets: unknown, where: string): { key: string; envVar: string }[] {
  if (secrets === undefined) return [];
  if (!Array.isArray(secrets))
    fail(
      "VALIDATION",
      where,
      `secrets must be an array of names or { key, envVar }, got ${describeValue(secrets)}`,
    );
  const envVarOf = (name: unknown, what: string) => {
    const envVar = validateEnvVarName(name, what);
    const reserved = reservedSecretEnv(envVar);
    return reserved ? fail("INVALID_ENV_VAR", what, reserved, envVar) : envVar;
  };
  return secrets.map((s) => {
    if (typeof s === "string") return { key: s, envVar: envVarOf(s, `${where} secret`) };
    if (isPlainObject(s) && typeof s.key === "string" && s.key !== "") {
      return {
        key: s.key,
        envVar: envVarOf(s.envVar ?? s.key, `${where} secret "${s.key}"`),
      };
    }
    return fail(
      "VALIDATION",
      where,
      `a secret must be a name or { key, envVar }, got ${describeValue(s)}`,
    );
  });
}
