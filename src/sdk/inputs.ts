import { isAbsolute, resolve } from "node:path";
import { CaravanError, describeValue } from "../errors.ts";
import { VALUE_BRAND } from "./global.ts";
import { defaultEnvVarFor, fail, validateEnvVarName, validateName } from "./validation.ts";

/**
 * The URL of a deployed app, resolved at deploy time and handed to the app as an input.
 * By default the internal endpoint (for app-to-app calls); `public: true` gives the public one.
 * @example new AppEndpoint({ appName: "backend-api" })
 */
export class AppEndpoint {
  readonly [VALUE_BRAND] = "app-endpoint" as const;
  readonly appName: string;
  readonly public: boolean;
  /** Only the plan's own project/domain is allowed; naming another is rejected at plan time. */
  readonly project?: string;
  readonly domain?: string;

  constructor(opts: { appName: string; public?: boolean; project?: string; domain?: string }) {
    if (!opts || typeof opts !== "object") {
      fail("INVALID_INPUT", "AppEndpoint", `expected { appName }, got ${describeValue(opts)}`);
    }
    this.appName = validateName(opts.appName, "AppEndpoint.appName");
    this.public = opts.public ?? false;
    if (opts.project !== undefined) this.project = opts.project;
    if (opts.domain !== undefined) this.domain = opts.domain;
  }

  toJSON() {
    return {
      kind: "app-endpoint",
      appName: this.appName,
      public: this.public,
      project: this.project,
      domain: this.domain,
    };
  }
}

/** The output of a task run, as an input: the latest successful run of `taskName`, or one run. */
export class RunOutput {
  readonly [VALUE_BRAND] = "run-output" as const;
  readonly taskName?: string;
  readonly runId?: string;

  constructor(opts: { taskName?: string; runId?: string }) {
    if (!opts || (typeof opts.taskName !== "string") === (typeof opts.runId !== "string")) {
      fail(
        "INVALID_INPUT",
        "RunOutput",
        `give exactly one of taskName or runId, got ${describeValue(opts)}`,
      );
    }
    if (opts.taskName !== undefined) this.taskName = opts.taskName;
    if (opts.runId !== undefined) this.runId = opts.runId;
  }

  toJSON() {
    return { kind: "run-output", taskName: this.taskName, runId: this.runId };
  }
}

/** A local file, copied into the revision when deployed. */
export class File {
  readonly [VALUE_BRAND] = "file" as const;
  readonly path: string;
  constructor(path: string) {
    if (typeof path !== "string" || path === "")
      fail("INVALID_INPUT", "File", `expected a path, got ${describeValue(path)}`);
    this.path = isAbsolute(path) ? path : resolve(path);
  }
  toJSON() {
    return { kind: "file", path: this.path };
  }
}

/** A local directory, copied into the revision when deployed. */
export class Dir {
  readonly [VALUE_BRAND] = "dir" as const;
  readonly path: string;
  constructor(path: string) {
    if (typeof path !== "string" || path === "")
      fail("INVALID_INPUT", "Dir", `expected a path, got ${describeValue(path)}`);
    this.path = isAbsolute(path) ? path : resolve(path);
  }
  toJSON() {
    return { kind: "dir", path: this.path };
  }
}

export type InputValue = string | AppEndpoint | RunOutput | File | Dir;
export type InputValueKind = "string" | "app-endpoint" | "run-output" | "file" | "dir";

export function inputValueKind(value: unknown): InputValueKind | undefined {
  if (typeof value === "string") return "string";
  if (value && typeof value === "object") {
    const brand = (value as Record<symbol, unknown>)[VALUE_BRAND];
    if (brand === "app-endpoint" || brand === "run-output" || brand === "file" || brand === "dir")
      return brand;
  }
  return undefined;
}

/**
 * A named value handed to an app at start: `getInput(name)` in TypeScript, and the
 * environment variable `envVar` (default: the name upper-cased) for any language.
 * @example new Input({ name: "backend_url", value: new AppEndpoint({ appName: "backend-api" }) })
 */
export class Input<const N extends string = string> {
  readonly [VALUE_BRAND] = "input" as const;
  readonly name: N;
  readonly value: InputValue;
  readonly envVar: string;
  readonly mount?: string;

  constructor(opts: { name: N; value: InputValue; envVar?: string; mount?: string }) {
    if (!opts || typeof opts !== "object")
      fail("INVALID_INPUT", "Input", `expected { name, value }, got ${describeValue(opts)}`);
    if (typeof opts.name !== "string" || !/^[A-Za-z_][A-Za-z0-9_.-]*$/.test(opts.name)) {
      fail(
        "INVALID_INPUT",
        "Input",
        `name must be an identifier like "backend_url", got ${describeValue(opts.name)}`,
        opts.name,
      );
    }
    const where = `Input "${opts.name}"`;
    if (inputValueKind(opts.value) === undefined) {
      fail(
        "INVALID_INPUT",
        where,
        `value must be a string, File, Dir, AppEndpoint or RunOutput, got ${describeValue(opts.value)}`,
        opts.value,
      );
    }
    this.name = opts.name;
    this.value = opts.value;
    this.envVar =
      opts.envVar === undefined
        ? defaultEnvVarFor(opts.name)
        : validateEnvVarName(opts.envVar, where);
    if (opts.mount !== undefined) {
      if (typeof opts.mount !== "string" || opts.mount === "")
        fail("INVALID_INPUT", where, `mount must be a path, got ${describeValue(opts.mount)}`);
      this.mount = opts.mount;
    }
  }

  toJSON() {
    return {
      name: this.name,
      value: typeof this.value === "string" ? this.value : this.value.toJSON(),
      envVar: this.envVar,
      mount: this.mount,
    };
  }
}

export function isInput(v: unknown): v is Input {
  return !!v && typeof v === "object" && (v as Record<symbol, unknown>)[VALUE_BRAND] === "input";
}

export function checkInputs(inputs: unknown, where: string): Input[] {
  if (inputs === undefined) return [];
  if (!Array.isArray(inputs))
    fail("INVALID_INPUT", where, `inputs must be an array of Input, got ${describeValue(inputs)}`);
  const seen = new Set<string>();
  return inputs.map((input, i) => {
    if (!isInput(input)) {
      throw new CaravanError(
        "INVALID_INPUT",
        `${where}: inputs[${i}] must be an Input (new Input({ name, value })), got ${describeValue(input)}`,
      );
    }
    if (seen.has(input.name)) {
      throw new CaravanError(
        "DUPLICATE_INPUT",
        `${where}: input name "${input.name}" is declared twice; input names must be unique`,
        { input: input.name },
      );
    }
    seen.add(input.name);
    return input;
  });
}
