import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { CaravanError, describeValue } from "../errors.ts";
import { shared } from "./global.ts";
import { NAME_PATTERN, isPlainObject } from "./validation.ts";

/** What `caravan.config.{ts,json,yaml}` may say. */
export interface CaravanConfig {
  /** @default "default" */
  project?: string;
  /** @default "development" */
  domain?: string;
  /** @default "local" */
  backend?: "local" | "kubernetes";
  /** Address of a running control plane, e.g. "http://127.0.0.1:7070". */
  controlPlane?: string;
  /** Where the kubernetes backend deploys. Kubeconfig comes the standard way (KUBECONFIG, ~/.kube/config). */
  kubernetes?: KubernetesConfig;
  /** Tracing and what the local control plane keeps of this project/domain's telemetry. */
  telemetry?: TelemetryConfig;
  /**
   * The local control plane's pool of warm runtime processes, which JS apps and task workers
   * start in (node started, caravan's runtime and frameworks loaded): `size` processes
   * (0 or `false`: none; `--no-warm` for one deploy), `preload` the packages they import
   * (learned from recent deploys when absent; `false`: none).
   * @default { size: 4 }
   * @example warmPool: { size: 8, preload: ["fastify"] }
   */
  warmPool?: WarmPoolConfig | false;
}

/**
 * @example { tracing: false } // no environment of this project is traced
 * @example { maxSpans: 20000, maxAgeHours: 6 }
 */
export interface TelemetryConfig {
  /** `false`: as `tracing: false` on every environment deployed with this config. @default true */
  tracing?: boolean;
  /** The newest this many spans of this project/domain are kept (locally). @default 100000 */
  maxSpans?: number;
  /** ... log records. @default 100000 */
  maxLogRecords?: number;
  /** ... metric points. @default 100000 */
  maxMetricPoints?: number;
  /** Nothing older (hours) is kept. @default 24 */
  maxAgeHours?: number;
}

export interface WarmPoolConfig {
  /** Warm processes kept ready, at most 64. @default 4 */
  size?: number;
  /** Packages a warm process imports. @default learned from recent deploys */
  preload?: string[] | false;
}

export type BackendName = "local" | "kubernetes";
export const BACKEND_NAMES: readonly BackendName[] = ["local", "kubernetes"];

export interface KubernetesConfig {
  /** Kubeconfig context. @default the kubeconfig's current context */
  context?: string;
  /** Namespace for this project/domain. @default "<project>-<domain>" */
  namespace?: string;
  /**
   * An OpenTelemetry collector's OTLP/HTTP base URL (e.g. "http://otel-collector.observability:4318"):
   * pods get the standard `OTEL_*` variables pointing there. Unset: no `OTEL_*` variables.
   */
  otlpEndpoint?: string;
  /** Where built images are pushed and pulled from, e.g. "registry.example.com/team". */
  registry?: string;
  /**
   * How apps with `ingress` are exposed: `domain` completes an `ingress.subdomain` into a host
   * (`<subdomain>.<domain>`), `className` picks the cluster's ingress controller.
   */
  ingress?: { domain?: string; className?: string };
}

export interface ResolvedConfig {
  project: string;
  domain: string;
  backend: BackendName;
  controlPlane?: string;
  kubernetes?: KubernetesConfig;
  telemetry?: TelemetryConfig;
  warmPool?: WarmPoolConfig | false;
  /** The config file used, if any. */
  file?: string;
}

export const CONFIG_FILES = [
  "caravan.config.ts",
  "caravan.config.json",
  "caravan.config.yaml",
  "caravan.config.yml",
];

/** Finds the nearest config file from `startDir` upwards. */
export function findConfigFile(startDir: string): string | undefined {
  let dir = resolve(startDir);
  for (;;) {
    for (const name of CONFIG_FILES) {
      const file = join(dir, name);
      if (existsSync(file)) return file;
    }
    const parent = dirname(dir);
    if (parent === dir) return undefined;
    dir = parent;
  }
}

async function readConfigFile(file: string): Promise<unknown> {
  try {
    if (file.endsWith(".ts")) {
      // Loaded only for a TypeScript config: `caravan status` in most projects reads none.
      const { prepareUserImport } = await import("./user-imports.ts");
      await prepareUserImport(file);
      const mod = (await import(pathToFileURL(file).href)) as { default?: unknown };
      return mod.default;
    }
    const text = readFileSync(file, "utf8");
    if (file.endsWith(".json")) return JSON.parse(text);
    // Loaded only for a YAML config: most commands never pay for the parser.
    const { parse } = await import("yaml");
    return parse(text);
  } catch (e) {
    throw new CaravanError("CONFIG", `${file}: cannot be read: ${(e as Error).message}`, { file });
  }
}

export function validateConfig(raw: unknown, file: string): CaravanConfig {
  if (raw === undefined || raw === null) return {};
  if (!isPlainObject(raw)) {
    throw new CaravanError(
      "CONFIG",
      `${file}: expected an object with project, domain, backend, controlPlane, kubernetes; got ${describeValue(raw)}`,
      { file },
    );
  }
  const out: CaravanConfig = {};
  for (const [key, value] of Object.entries(raw)) {
    const bad = (rule: string): never => {
      throw new CaravanError(
        "CONFIG",
        `${file}: field "${key}" ${rule}, got ${describeValue(value)}`,
        { file, field: key },
      );
    };
    switch (key) {
      case "project":
      case "domain":
        if (typeof value !== "string" || !NAME_PATTERN.test(value))
          bad('must be a DNS-1123 label like "my-project"');
        out[key] = value as string;
        break;
      case "backend":
        if (value !== "local" && value !== "kubernetes") bad('must be "local" or "kubernetes"');
        out.backend = value as "local" | "kubernetes";
        break;
      case "controlPlane":
        if (typeof value !== "string" || !/^https?:\/\/[^\s]+$/.test(value))
          bad('must be a URL like "http://127.0.0.1:7070"');
        out.controlPlane = value as string;
        break;
      case "kubernetes": {
        if (!isPlainObject(value)) bad("must be an object like { context, namespace }");
        const k8s: KubernetesConfig = {};
        for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
          if (k === "context") {
            if (typeof v !== "string" || v === "")
              bad(".context must be a kubeconfig context name");
            k8s.context = v as string;
          } else if (k === "namespace") {
            if (typeof v !== "string" || !NAME_PATTERN.test(v))
              bad('.namespace must be a DNS-1123 label like "shop-dev"');
            k8s.namespace = v as string;
          } else if (k === "registry") {
            if (typeof v !== "string" || !/^[a-z0-9][-a-z0-9.:/_]*$/i.test(v))
              bad('.registry must be an image registry prefix like "registry.example.com/team"');
            k8s.registry = v as string;
          } else if (k === "ingress") {
            k8s.ingress = ingressSettings(v, bad);
          } else if (k === "otlpEndpoint") {
            if (typeof v !== "string" || !/^https?:\/\/[^\s]+$/.test(v))
              bad('.otlpEndpoint must be a URL like "http://otel-collector.observability:4318"');
            k8s.otlpEndpoint = v as string;
          } else
            bad(
              `has an unknown field "${k}" (known: context, namespace, registry, ingress, otlpEndpoint)`,
            );
        }
        out.kubernetes = k8s;
        break;
      }
      case "telemetry":
        out.telemetry = telemetrySettings(value, bad);
        break;
      case "warmPool":
        out.warmPool = warmPoolSettings(value, bad);
        break;
      default:
        bad(
          "is not a caravan setting (known: project, domain, backend, controlPlane, kubernetes, telemetry, warmPool)",
        );
    }
  }
  return out;
}

/** What a command line (or `init()`) may override. */
export interface ConfigOverrides {
  project?: string | undefined;
  domain?: string | undefined;
  /** `--backend`; else `CARAVAN_BACKEND`; else the file's. */
  backend?: string | undefined;
  /** `--context`: a kubeconfig context (the kubernetes backend). */
  context?: string | undefined;
}

/** Loads the config for `dir` (nearest file upwards), then applies overrides. */
export async function loadConfig(
  dir: string,
  overrides: ConfigOverrides = {},
): Promise<ResolvedConfig> {
  const file = findConfigFile(dir);
  const fromFile = file ? validateConfig(await readConfigFile(file), file) : {};
  const fromInit = shared().config ?? {};
  const backend = overrides.backend ?? process.env.CARAVAN_BACKEND ?? fromFile.backend ?? "local";
  if (!BACKEND_NAMES.includes(backend as BackendName)) {
    const from =
      overrides.backend !== undefined
        ? "--backend"
        : process.env.CARAVAN_BACKEND !== undefined
          ? "CARAVAN_BACKEND"
          : "backend";
    throw new CaravanError(
      "USAGE",
      `${from} ${describeValue(backend)} is not a backend; use one of: ${BACKEND_NAMES.join(", ")}`,
    );
  }
  let kubernetes = fromFile.kubernetes;
  if (overrides.context !== undefined) {
    if (overrides.context === "")
      throw new CaravanError("USAGE", "--context needs a kubeconfig context name");
    kubernetes = { ...kubernetes, context: overrides.context };
  }
  for (const key of ["project", "domain"] as const) {
    const value = overrides[key];
    if (value !== undefined && !NAME_PATTERN.test(value)) {
      throw new CaravanError(
        "USAGE",
        `--${key} ${describeValue(value)} is not a DNS-1123 label like "my-project"`,
      );
    }
  }
  return {
    project: overrides.project ?? fromInit.project ?? fromFile.project ?? "default",
    domain: overrides.domain ?? fromInit.domain ?? fromFile.domain ?? "development",
    backend: backend as BackendName,
    ...(fromFile.controlPlane ? { controlPlane: fromFile.controlPlane } : {}),
    ...(kubernetes ? { kubernetes } : {}),
    ...(fromFile.telemetry ? { telemetry: fromFile.telemetry } : {}),
    ...(fromFile.warmPool !== undefined ? { warmPool: fromFile.warmPool } : {}),
    ...(file ? { file } : {}),
  };
}

/**
 * Sets up caravan for a script (the seed's `init_from_config`): reads the config file found
 * from `rootDir` upwards; `project`/`domain` here win over the file.
 * @example await init({ rootDir: new URL(".", import.meta.url).pathname })
 */
export async function init(
  opts: { rootDir?: string; project?: string; domain?: string } = {},
): Promise<ResolvedConfig> {
  const rootDir = opts.rootDir ?? process.cwd();
  shared().config = {};
  const config = await loadConfig(rootDir, { project: opts.project, domain: opts.domain });
  shared().config = { rootDir, project: config.project, domain: config.domain };
  return config;
}

function warmPoolSettings(value: unknown, bad: (why: string) => never): WarmPoolConfig | false {
  if (value === false) return false;
  if (!isPlainObject(value))
    bad('must be false or an object like { size: 4, preload: ["fastify"] }');
  const out: WarmPoolConfig = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k === "size") {
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 64)
        bad(".size must be a whole number from 0 to 64");
      out.size = v as number;
    } else if (k === "preload") {
      if (v !== false && !(Array.isArray(v) && v.every((p) => typeof p === "string" && p !== "")))
        bad('.preload must be false or a list of package names like ["fastify"]');
      out.preload = v as string[] | false;
    } else bad(`has an unknown field "${k}" (known: size, preload)`);
  }
  return out;
}

const DNS_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function ingressSettings(
  value: unknown,
  bad: (why: string) => never,
): NonNullable<KubernetesConfig["ingress"]> {
  if (!isPlainObject(value)) bad('.ingress must be an object like { domain: "apps.example.com" }');
  const out: NonNullable<KubernetesConfig["ingress"]> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k === "domain") {
      if (typeof v !== "string" || !DNS_NAME.test(v))
        bad('.ingress.domain must be a DNS name like "apps.example.com"');
      out.domain = v as string;
    } else if (k === "className") {
      if (typeof v !== "string" || !NAME_PATTERN.test(v))
        bad('.ingress.className must be an IngressClass name like "nginx"');
      out.className = v as string;
    } else bad(`.ingress has an unknown field "${k}" (known: domain, className)`);
  }
  return out;
}

function telemetrySettings(value: unknown, bad: (why: string) => never): TelemetryConfig {
  if (!isPlainObject(value)) bad("must be an object like { tracing: false, maxSpans: 20000 }");
  const out: TelemetryConfig = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (k === "tracing") {
      if (typeof v !== "boolean") bad(".tracing must be true or false");
      out.tracing = v as boolean;
    } else if (k === "maxSpans" || k === "maxLogRecords" || k === "maxMetricPoints") {
      if (!Number.isSafeInteger(v) || (v as number) < 1) bad(`.${k} must be a whole number >= 1`);
      out[k] = v as number;
    } else if (k === "maxAgeHours") {
      if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v))
        bad(".maxAgeHours must be a number of hours > 0");
      out.maxAgeHours = v as number;
    } else
      bad(
        `.${k} is not a telemetry setting (known: tracing, maxSpans, maxLogRecords, maxMetricPoints, maxAgeHours)`,
      );
  }
  return out;
}
