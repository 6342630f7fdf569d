import { CaravanError, describeValue, type ErrorCode } from "../errors.ts";

/** DNS-1123 label: what Kubernetes accepts as a service name, so local and cluster agree. */
export const NAME_PATTERN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const ENV_VAR_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** Ports the serving platform keeps for itself (the seed SDK's list). */
export const RESERVED_PORTS: readonly number[] = [8012, 8022, 8112, 9090, 9091];

export function fail(code: ErrorCode, where: string, message: string, value?: unknown): never {
  throw new CaravanError(code, `${where}: ${message}`, {
    where,
    ...(value === undefined ? {} : { value: describeValue(value) }),
  });
}

export function validateName(name: unknown, what: string): string {
  if (typeof name !== "string" || name.length === 0) {
    fail("INVALID_NAME", what, `name must be a non-empty string, got ${describeValue(name)}`);
  }
  if (name.length > 63) {
    fail(
      "INVALID_NAME",
      what,
      `name ${describeValue(name)} is ${name.length} characters; the limit is 63 (a DNS-1123 label)`,
      name,
    );
  }
  if (!NAME_PATTERN.test(name)) {
    fail(
      "INVALID_NAME",
      what,
      `name ${describeValue(name)} is not a DNS-1123 label: use lowercase letters, digits and '-', starting and ending with a letter or digit (e.g. "backend-api")`,
      name,
    );
  }
  return name;
}

export function validatePort(port: unknown, where: string): number {
  if (typeof port !== "number" || !Number.isInteger(port) || port < 1 || port > 65535) {
    fail(
      "INVALID_PORT",
      where,
      `port must be an integer from 1 to 65535, got ${describeValue(port)}`,
      port,
    );
  }
  if (RESERVED_PORTS.includes(port)) {
    fail(
      "INVALID_PORT",
      where,
      `port ${port} is reserved (reserved: ${RESERVED_PORTS.join(", ")}); pick another, e.g. 8080`,
      port,
    );
  }
  return port;
}

export function validateEnvVarName(name: unknown, where: string): string {
  if (typeof name !== "string" || !ENV_VAR_PATTERN.test(name)) {
    fail(
      "INVALID_ENV_VAR",
      where,
      `environment variable name ${describeValue(name)} must match ${ENV_VAR_PATTERN} (letters, digits, '_', not starting with a digit)`,
      name,
    );
  }
  return name;
}

export function validateEnvVars(vars: unknown, where: string): Record<string, string> {
  if (vars === undefined) return {};
  if (typeof vars !== "object" || vars === null || Array.isArray(vars)) {
    fail(
      "INVALID_ENV_VAR",
      where,
      `envVars must be an object of name -> string, got ${describeValue(vars)}`,
    );
  }
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(vars)) {
    validateEnvVarName(k, where);
    if (typeof v !== "string") {
      fail("INVALID_ENV_VAR", where, `envVars.${k} must be a string, got ${describeValue(v)}`, v);
    }
    out[k] = v;
  }
  return out;
}

/**
 * Environment variable names a secret may not take: they change how a process starts (the
 * loader, Node.js, the shell's lookup) or are what caravan itself gives an app. A value there
 * would break the app with a misleading error, or swap out its run token.
 */
export const RESERVED_SECRET_ENV =
  "PATH, HOME, PORT, HOST, NODE_OPTIONS, NODE_PATH, LD_*, DYLD_*, CARAVAN_*";

/** Why `name` may not be a secret's environment variable (see RESERVED_SECRET_ENV), if it may not. */
export function reservedSecretEnv(name: string): string | undefined {
  const upper = name.toUpperCase();
  const reserved =
    ["PATH", "HOME", "PORT", "HOST", "NODE_OPTIONS", "NODE_PATH"].includes(upper) ||
    /^(LD_|DYLD_|CARAVAN_)/.test(upper);
  return reserved
    ? `${name} is reserved for secrets: a secret may not set ${RESERVED_SECRET_ENV} (they change how a process starts, or are caravan's own); pick another name, e.g. MY_${upper.replace(/^(LD_|DYLD_|CARAVAN_)/, "")}`
    : undefined;
}

/** The default environment variable for an input: `backend_url` -> `BACKEND_URL`. */
export function defaultEnvVarFor(inputName: string): string {
  const upper = inputName.toUpperCase().replace(/[^A-Z0-9]/g, "_");
  return /^[0-9]/.test(upper) ? `_${upper}` : upper;
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}
