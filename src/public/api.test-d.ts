import Fastify from "fastify";
import { describe, expectTypeOf, test } from "vitest";
import {
  AppEndpoint,
  AppEnvironment,
  CaravanError,
  Dir,
  Environment,
  File,
  Image,
  Input,
  RunOutput,
  TaskEnvironment,
  getInput,
  inRuntime,
  init,
  isEnvironment,
  type AppEnvironmentOptions,
  type EnvironmentKind,
  type ErrorCode,
  type InputValue,
  type Port,
  type Resources,
  type SoftDependency,
  type Task,
} from "./index.ts";
import { FastifyAppEnvironment } from "./fastify.ts";
import * as runtime from "./runtime.ts";

describe("AppEnvironment", () => {
  test("takes the documented options", () => {
    const dep = new TaskEnvironment({ name: "dep" });
    const env = new AppEnvironment({
      name: "api",
      dependsOn: [dep],
      image: Image.fromDebianBase({ node: "22" }),
      resources: { cpu: "500m", memory: "512Mi", gpu: 1 },
      envVars: { LOG_LEVEL: "debug" },
      secrets: ["API_KEY", { key: "db", envVar: "DB_PASSWORD" }],
      description: "the API",
      port: { port: 3000, name: "http" },
      command: ["node", "server.js"],
      args: ["--verbose"],
      scaling: { replicas: [1, 3], concurrency: 10, scaledownAfter: 300 },
      timeouts: { request: 30, start: 20 },
      links: [{ path: "/docs", title: "Docs", isRelative: true }],
      include: ["server.js"],
      ingress: { subdomain: "api" },
      requiresAuth: false,
      inputs: [new Input({ name: "backend_url", value: new AppEndpoint({ appName: "backend" }) })],
      readiness: { path: "/healthz" },
    });
    expectTypeOf(env).toExtend<Environment>();
    expectTypeOf(env.kind).toEqualTypeOf<EnvironmentKind>();
    expectTypeOf(env.endpoint).toBeString();
    expectTypeOf(env.port).toEqualTypeOf<Port>();
    expectTypeOf(env.scaling.replicas).toEqualTypeOf<[number, number]>();
    expectTypeOf(env.requiresAuth).toBeBoolean();
    expectTypeOf(env.addDependency).parameters.toEqualTypeOf<(Environment | SoftDependency)[]>();
    expectTypeOf(env.addDependency(dep)).toEqualTypeOf<AppEnvironment<"backend_url">>();
    expectTypeOf<AppEnvironmentOptions["name"]>().toEqualTypeOf<string>();
    expectTypeOf<AppEnvironmentOptions["port"]>().toEqualTypeOf<number | Port | undefined>();
    expectTypeOf<AppEnvironmentOptions["command"]>().toEqualTypeOf<string | string[] | undefined>();
    expectTypeOf<AppEnvironmentOptions["dependsOn"]>().toEqualTypeOf<
      (Environment | SoftDependency)[] | undefined
    >();
  });

  test("rejects wrong options at compile time", () => {
    // @ts-expect-error name is required
    new AppEnvironment({ port: 3000 });
    // @ts-expect-error unknown option
    new AppEnvironment({ name: "api", prot: 3000 });
    // @ts-expect-error port is a number, not a string
    new AppEnvironment({ name: "api", port: "3000" });
    // @ts-expect-error replicas is [min, max] or a number
    new AppEnvironment({ name: "api", scaling: { replicas: [1, 2, 3] } });
    // @ts-expect-error memory is a quantity string
    new AppEnvironment({ name: "api", resources: { memory: 512 } });
    // @ts-expect-error dependsOn takes environments, not names
    new AppEnvironment({ name: "api", dependsOn: ["backend"] });
    // @ts-expect-error requiresAuth is a boolean
    new AppEnvironment({ name: "api", requiresAuth: "no" });
  });
});

describe("TaskEnvironment", () => {
  test("task() returns a typed callable with an id", () => {
    const env = new TaskEnvironment({ name: "training-env" });
    const train = env.task(async function train(epochs: number, name: string) {
      return { epochs, name };
    });
    expectTypeOf(train).toEqualTypeOf<
      Task<[epochs: number, name: string], Promise<{ epochs: number; name: string }>>
    >();
    expectTypeOf(train).parameters.toEqualTypeOf<[epochs: number, name: string]>();
    expectTypeOf(train).returns.toEqualTypeOf<Promise<{ epochs: number; name: string }>>();
    expectTypeOf(train).toBeCallableWith(3, "x");
    expectTypeOf(train.id).toBeString();
    expectTypeOf(train.taskName).toBeString();
    expectTypeOf(train.environment).toEqualTypeOf<TaskEnvironment>();
    // @ts-expect-error the arguments are typed
    void train("3", "x");

    // A synchronous function still gives a promise, not a nested one.
    const count = env.task((xs: string[]) => xs.length, { name: "count", retries: 2 });
    expectTypeOf(count).returns.toEqualTypeOf<Promise<number>>();
    const nested = env.task(async () => Promise.resolve("x"), { name: "nested" });
    expectTypeOf(nested).returns.toEqualTypeOf<Promise<string>>();
  });

  test("does not take app options", () => {
    // @ts-expect-error task environments have no port
    new TaskEnvironment({ name: "t", port: 8080 });
    const env = new TaskEnvironment({ name: "t" });
    // @ts-expect-error retries is a number
    env.task(async function f() {}, { retries: "2" });
  });
});

describe("inputs and runtime", () => {
  test("getInput is generic, a string by default", () => {
    expectTypeOf(getInput("backend_url")).toEqualTypeOf<string>();
    expectTypeOf(getInput<{ url: string }>("config")).toEqualTypeOf<{ url: string }>();
    expectTypeOf(getInput).parameter(0).toEqualTypeOf<string>();
    expectTypeOf(inRuntime()).toEqualTypeOf<boolean>();
    expectTypeOf(runtime.getInput).toEqualTypeOf(getInput);
  });

  test("env.input is typed by the declared inputs", () => {
    const env = new FastifyAppEnvironment({
      name: "frontend",
      app: Fastify(),
      inputs: [
        new Input({ name: "backend_url", value: new AppEndpoint({ appName: "backend" }) }),
        new Input({ name: "mode", value: "fast" }),
      ],
    });
    expectTypeOf(env.input).parameter(0).toEqualTypeOf<"backend_url" | "mode">();
    expectTypeOf(env.input("mode")).toEqualTypeOf<string>();
    // @ts-expect-error: not a declared input
    env.input("nope");
  });

  test("Input values", () => {
    expectTypeOf<InputValue>().toEqualTypeOf<string | AppEndpoint | RunOutput | File | Dir>();
    const input = new Input({ name: "model", value: new File("model.bin"), envVar: "MODEL" });
    expectTypeOf(input.name).toEqualTypeOf<"model">();
    new Input({ name: "data", value: new Dir("data") });
    new Input({ name: "run", value: new RunOutput({ taskName: "train" }) });
    // @ts-expect-error numbers are not input values
    new Input({ name: "n", value: 3 });
    // @ts-expect-error appName is required
    new AppEndpoint({ public: true });
    expectTypeOf(new AppEndpoint({ appName: "a", public: true }).public).toBeBoolean();
  });

  test("resources", () => {
    expectTypeOf<{ cpu: 1; memory: "512Mi" }>().toExtend<Resources>();
    expectTypeOf<{ cpu: "500m" }>().toExtend<Resources>();
    expectTypeOf<{ memory: 512 }>().not.toExtend<Resources>();
  });
});

describe("Image", () => {
  test("the builder chain returns images", () => {
    const image = Image.fromDebianBase({ node: "22" })
      .withNpmPackages("fastify", "pino")
      .withAptPackages("curl")
      .withEnv({ NODE_ENV: "production" });
    expectTypeOf(image).toEqualTypeOf<Image>();
    expectTypeOf(Image.fromRef("node:22-slim")).toEqualTypeOf<Image>();
    expectTypeOf(image.tag).toBeString();
    expectTypeOf(image.dockerfile()).toBeString();
    // @ts-expect-error the Node version is a string
    Image.fromDebianBase({ node: 22 });
    // @ts-expect-error images are made by the static builders
    new Image({});
    // @ts-expect-error env values are strings
    image.withEnv({ PORT: 8080 });
  });
});

describe("FastifyAppEnvironment", () => {
  test("accepts a Fastify instance", () => {
    const app = Fastify();
    const env = new FastifyAppEnvironment({
      name: "api",
      app,
      image: Image.fromDebianBase(),
      resources: { cpu: 1, memory: "512Mi" },
      requiresAuth: false,
    });
    expectTypeOf(env).toExtend<AppEnvironment>();
    expectTypeOf(env.endpoint).toBeString();
    new FastifyAppEnvironment({ name: "with-logger", app: Fastify({ logger: true }) });
  });

  test("rejects what is not a Fastify app, and command apps", () => {
    // @ts-expect-error app is required
    new FastifyAppEnvironment({ name: "api" });
    // @ts-expect-error a plain object is not a Fastify instance
    new FastifyAppEnvironment({ name: "api", app: {} });
    // @ts-expect-error a framework app has no command
    new FastifyAppEnvironment({ name: "api", app: Fastify(), command: ["node", "x.js"] });
  });
});

describe("misc", () => {
  test("errors, brands and init", () => {
    expectTypeOf<CaravanError["code"]>().toEqualTypeOf<ErrorCode>();
    expectTypeOf<"CYCLE">().toExtend<ErrorCode>();
    expectTypeOf<"NOT_A_CODE">().not.toExtend<ErrorCode>();
    const value: unknown = {};
    if (isEnvironment(value)) expectTypeOf(value).toEqualTypeOf<Environment>();
    expectTypeOf(init).returns.resolves.toHaveProperty("project").toBeString();
    expectTypeOf(init)
      .parameter(0)
      .toEqualTypeOf<{ rootDir?: string; project?: string; domain?: string } | undefined>();
  });
});
