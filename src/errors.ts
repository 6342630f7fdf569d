/**
 * One error hierarchy for all of caravan. Every error a user can cause has a stable `code`
 * (tools match on it) and a message that names the thing and says what to do.
 */

/** Stable error codes. Adding one is fine; renaming one breaks users. */
export type ErrorCode =
  | "VALIDATION"
  | "INVALID_NAME"
  | "INVALID_PORT"
  | "INVALID_SCALING"
  | "INVALID_TIMEOUT"
  | "INVALID_ENV_VAR"
  | "INVALID_RESOURCES"
  | "INVALID_DEPENDENCY"
  | "INVALID_INPUT"
  | "DUPLICATE_INPUT"
  | "DUPLICATE_NAME"
  | "CYCLE"
  | "UNKNOWN_ENVIRONMENT"
  | "UNKNOWN_APP_ENDPOINT"
  | "CROSS_SCOPE_DEPENDENCY"
  | "NOT_IN_RUNTIME"
  | "ENDPOINT_UNKNOWN"
  | "UNKNOWN_INPUT"
  | "CONFIG"
  | "LOAD_FAILED"
  | "NO_ENVIRONMENTS"
  | "USAGE"
  | "APP_NOT_READY"
  | "APP_EXITED"
  | "START_TIMEOUT"
  | "DEPLOY_FAILED"
  | "DEPENDENTS_EXIST"
  | "DEPENDENCY_GONE"
  | "NAME_TAKEN"
  | "NOT_DEPLOYED"
  | "SERVER_UNREACHABLE"
  | "UNAUTHORIZED"
  | "BUNDLE_FAILED"
  | "MISSING_SECRET"
  | "UNKNOWN_VARIABLE"
  | "UNKNOWN_TASK"
  | "TASK_FAILED"
  | "JOB_FAILED"
  | "NOT_SERIALIZABLE"
  | "NO_SUCH_RUN"
  | "NOT_FOUND"
  | "UNSUPPORTED"
  | "CLUSTER_UNREACHABLE"
  | "CLUSTER_REJECTED"
  | "INTERNAL";

export class CaravanError extends Error {
  readonly code: ErrorCode;
  /** Extra facts for tools (the cycle path, the offending value...). */
  readonly details: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.name = "CaravanError";
    this.code = code;
    this.details = details;
  }

  toJSON(): { code: ErrorCode; message: string; details: Record<string, unknown> } {
    return { code: this.code, message: this.message, details: this.details };
  }

  /** Rebuilds an error that crossed a process boundary as JSON. */
  static fromJSON(json: { code?: string; message?: string; details?: Record<string, unknown> }) {
    return new CaravanError(
      (json.code as ErrorCode | undefined) ?? "INTERNAL",
      json.message ?? "unknown error",
      json.details ?? {},
    );
  }
}

/** Errors from another copy of caravan are still ours: match on shape, not on `instanceof`. */
export function isCaravanError(e: unknown): e is CaravanError {
  return (
    e instanceof CaravanError ||
    (e instanceof Error &&
      e.name === "CaravanError" &&
      typeof (e as CaravanError).code === "string")
  );
}

/** Renders any value for an error message: short, and never "[object Object]". */
export function describeValue(value: unknown): string {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "function") return `function ${value.name || "(anonymous)"}`;
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value !== "object") return String(value);
  const ctor = (value as object).constructor?.name;
  try {
    const json = JSON.stringify(value);
    const short = json.length > 60 ? `${json.slice(0, 57)}...` : json;
    return ctor && ctor !== "Object" && ctor !== "Array" ? `${ctor} ${short}` : short;
  } catch {
    return ctor ? `a ${ctor}` : "an object";
  }
}

/**
 * The first line of an error message, for one-line displays: without the "; last lines of
 * its log:" lead-in whose log tail follows on the next lines.
 */
export function headline(message: string): string {
  return message.split("\n")[0]!.replace(/;? last lines of its log:$/, "");
}
