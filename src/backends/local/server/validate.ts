/**
 * The daemon's own checks of what a request carries: the API does not trust that a caller
 * went through the SDK's validation. Names become file names (logs, inputs files) and keys,
 * so a scope or name that is not a DNS-1123 label is refused before the control plane sees
 * it, with a 400 naming the field (`VALIDATION`). Shapes are checked as far as the control
 * plane reads them.
 */
import { CaravanError, describeValue } from "../../../errors.ts";
import { ENV_VAR_PATTERN, NAME_PATTERN } from "../../../sdk/validation.ts";
import { ROUTES } from "../../http-routes.ts";

type Json = Record<string, unknown>;

function bad(field: string, rule: string, value: unknown): never {
  throw new CaravanError(
    "VALIDATION",
    `${field} ${rule}, got ${describeValue(value).slice(0, 200)}`,
    { field },
  );
}

const isObject = (v: unknown): v is Json =>
  typeof v === "object" && v !== null && !Array.isArray(v);

function object(v: unknown, field: string): Json {
  if (!isObject(v)) bad(field, "must be a JSON object", v);
  return v;
}

function name(v: unknown, field: string): string {
  if (typeof v !== "string" || v.length > 63 || !NAME_PATTERN.test(v))
    bad(field, 'must be a DNS-1123 label like "my-app" (lowercase letters, digits, "-")', v);
  return v;
}

function scope(v: unknown, field = "scope"): void {
  const s = object(v, field);
  name(s.project, `${field}.project`);
  name(s.domain, `${field}.domain`);
}

function names(v: unknown, field: string): void {
  if (!Array.isArray(v)) bad(field, "must be an array of names", v);
  v.forEach((n, i) => name(n, `${field}[${i}]`));
}

function string(v: unknown, field: string, pattern?: RegExp): string {
  if (typeof v !== "string" || (pattern && !pattern.test(v)))
    bad(field, pattern ? `must be a string matching ${pattern}` : "must be a string", v);
  return v;
}

function optional<T>(v: unknown, check: (v: unknown) => T): void {
  if (v !== undefined) check(v);
}

function strings(v: unknown, field: string): void {
  if (!Array.isArray(v)) bad(field, "must be an array of strings", v);
  v.forEach((s, i) => string(s, `${field}[${i}]`));
}

function record(v: unknown, field: string, value: (v: unknown, field: string) => void): void {
  const r = object(v, field);
  for (const [k, x] of Object.entries(r)) value(x, `${field}.${k}`);
}

function integer(v: unknown, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max)
    bad(field, `must be an integer from ${min} to ${max}`, v);
  return v;
}

function positive(v: unknown, field: string): void {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0)
    bad(field, "must be a positive number", v);
}

const ABSOLUTE = /^\//;
const HASH = /^[A-Za-z0-9_-]{1,128}$/;

function envName(v: unknown, field: string): void {
  string(v, field, ENV_VAR_PATTERN);
}

/** A deploy (or prepare) request, as far as the control plane reads it. */
export function checkDeployRequest(body: unknown): void {
  const b = object(body, "request body");
  scope(b.scope);
  const n = name(b.name, "name");
  const kind = string(b.kind, "kind");
  if (!["app", "task", "job"].includes(kind)) bad("kind", 'must be "app", "task" or "job"', kind);
  string(b.revision, "revision", HASH);
  optional(b.force, (v) => typeof v === "boolean" || bad("force", "must be a boolean", v));
  optional(b.source, (v) => string(v, "source", ABSOLUTE));
  optional(b.replace, (v) => typeof v === "boolean" || bad("replace", "must be a boolean", v));
  optional(b.warmPool, (v) => {
    const w = object(v, "warmPool");
    optional(w.size, (n) => integer(n, "warmPool.size", 0, 64));
    optional(w.preload, (p) => p === false || strings(p, "warmPool.preload"));
  });
  const code = object(b.code, "code");
  string(code.hash, "code.hash", HASH);
  string(code.entry, "code.entry", ABSOLUTE);
  optional(code.ownEntry, (v) => string(v, "code.ownEntry", ABSOLUTE));
  string(code.sourceRoot, "code.sourceRoot", ABSOLUTE);
  string(code.runtime, "code.runtime", ABSOLUTE);
  optional(b.files, (v) => {
    const f = object(v, "files");
    string(f.hash, "files.hash", HASH);
    string(f.dir, "files.dir", ABSOLUTE);
  });
  optional(b.telemetry, (v) => {
    const t = object(v, "telemetry");
    for (const [k, n] of Object.entries(t))
      if (
        !["maxSpans", "maxLogRecords", "maxMetricPoints", "maxAgeHours"].includes(k) ||
        typeof n !== "number" ||
        !(n > 0) ||
        !Number.isFinite(n)
      )
        bad(`telemetry.${k}`, "must be a known limit, a number > 0", n);
  });
  record(b.inputs ?? {}, "inputs", string);
  const deps = object(b.dependencies ?? {}, "dependencies");
  for (const [dep, ep] of Object.entries(deps)) {
    name(dep, `dependencies key`);
    const e = object(ep, `dependencies.${dep}`);
    string(e.endpoint, `dependencies.${dep}.endpoint`, /^https?:\/\//);
    string(e.internalEndpoint, `dependencies.${dep}.internalEndpoint`, /^https?:\/\//);
  }
  const spec = object(b.spec, "spec");
  if (spec.name !== n)
    bad("spec.name", `must be the request's name ${JSON.stringify(n)}`, spec.name);
  if (spec.kind !== kind)
    bad("spec.kind", `must be the request's kind ${JSON.stringify(kind)}`, spec.kind);
  names(spec.dependsOn ?? [], "spec.dependsOn");
  record(spec.envVars ?? {}, "spec.envVars", string);
  Object.keys(object(spec.envVars ?? {}, "spec.envVars")).forEach((k) =>
    envName(k, `spec.envVars key`),
  );
  if (!Array.isArray(spec.secrets ?? [])) bad("spec.secrets", "must be an array", spec.secrets);
  ((spec.secrets ?? []) as unknown[]).forEach((s, i) => {
    const o = object(s, `spec.secrets[${i}]`);
    string(o.key, `spec.secrets[${i}].key`);
    envName(o.envVar, `spec.secrets[${i}].envVar`);
  });
  if (kind === "app") {
    integer(object(spec.port, "spec.port").port, "spec.port.port", 1, 65535);
    optional(spec.command, (v) => strings(v, "spec.command"));
    strings(spec.args ?? [], "spec.args");
    strings(spec.include ?? [], "spec.include");
    const scaling = object(spec.scaling, "spec.scaling");
    const replicas = scaling.replicas;
    if (!Array.isArray(replicas) || replicas.length !== 2)
      bad("spec.scaling.replicas", "must be [min, max]", replicas);
    integer(replicas[0], "spec.scaling.replicas[0]", 0, 1000);
    integer(replicas[1], "spec.scaling.replicas[1]", Math.max(1, replicas[0] as number), 1000);
    const timeouts = object(spec.timeouts, "spec.timeouts");
    positive(timeouts.start, "spec.timeouts.start");
    optional(timeouts.request, (v) => positive(v, "spec.timeouts.request"));
    if (!Array.isArray(spec.inputs ?? [])) bad("spec.inputs", "must be an array", spec.inputs);
    ((spec.inputs ?? []) as unknown[]).forEach((input, i) => {
      const o = object(input, `spec.inputs[${i}]`);
      string(o.name, `spec.inputs[${i}].name`);
      envName(o.envVar, `spec.inputs[${i}].envVar`);
    });
    optional(spec.readiness, (v) => object(v, "spec.readiness"));
  }
}

/** What every request to the daemon's API carries, checked before its handler runs. */
export function checkRequest(
  route: string | undefined,
  method: string,
  body: unknown,
  query: unknown,
): void {
  const q = (query ?? {}) as Json;
  switch (`${method} ${route}`) {
    case `POST ${ROUTES.deploy}`:
    case `POST ${ROUTES.prepare}`:
      return checkDeployRequest(body);
    case `POST ${ROUTES.reserve}`:
    case `POST ${ROUTES.stop}`:
    case `POST ${ROUTES.delete}`: {
      const b = object(body, "request body");
      scope(b.scope);
      names(b.names, "names");
      optional(b.cascade, (v) => typeof v === "boolean" || bad("cascade", "must be a boolean", v));
      return;
    }
    case `POST ${ROUTES.discard}`:
    case `POST ${ROUTES.loginLink}`:
    case `POST ${ROUTES.start}`:
    case `POST ${ROUTES.restart}`: {
      const b = object(body, "request body");
      scope(b.scope);
      name(b.name, "name");
      return;
    }
    case `POST ${ROUTES.scale}`: {
      const b = object(body, "request body");
      scope(b.scope);
      name(b.name, "name");
      integer(b.replicas, "replicas", 0, 1000);
      return;
    }
    case `GET ${ROUTES.environment}`:
    case `GET ${ROUTES.events}`:
    case `GET ${ROUTES.watch}`:
      name(q.project, "project");
      name(q.domain, "domain");
      optional(q.after, (v) => string(v, "after", /^\d{1,15}$/));
      optional(q.limit, (v) => string(v, "limit", /^\d{1,4}$/));
      return;
    case `GET ${ROUTES.status}`:
    case `GET ${ROUTES.runs}`:
      optional(q.project, (v) => name(v, "project"));
      optional(q.domain, (v) => name(v, "domain"));
      return;
    case `GET ${ROUTES.traces}`:
      optional(q.project, (v) => name(v, "project"));
      optional(q.domain, (v) => name(v, "domain"));
      optional(q.app, (v) => name(v, "app"));
      optional(q.status, (v) => string(v, "status", /^(ok|error)$/));
      optional(q.minDurationMs, (v) => string(v, "minDurationMs", /^\d{1,9}(\.\d{1,3})?$/));
      optional(q.limit, (v) => string(v, "limit", /^\d{1,4}$/));
      return;
    case `GET ${ROUTES.logRecords}`:
    case `GET ${ROUTES.appMetrics}`:
      name(q.project, "project");
      name(q.domain, "domain");
      name(q.app, "app");
      optional(q.name, (v) => string(v, "name", /^[\x21-\x7e]{1,255}$/));
      optional(q.limit, (v) => string(v, "limit", /^\d{1,4}$/));
      return;
    case `GET ${ROUTES.trace}`:
      return;
    case `GET ${ROUTES.logs}`:
      name(q.project, "project");
      name(q.domain, "domain");
      name(q.name, "name");
      optional(q.tail, (v) => string(v, "tail", /^\d{1,9}$/));
      return;
    case `POST ${ROUTES.runs}`: {
      const b = object(body, "request body");
      scope(b.scope);
      return;
    }
    case `POST ${ROUTES.tokens}`: {
      const b = body === undefined || body === null ? {} : object(body, "request body");
      optional(b.name, (v) => string(v, "name"));
      return;
    }
    case `POST ${ROUTES.shutdown}`: {
      if (body === undefined || body === null) return;
      const b = object(body, "request body");
      optional(
        b.stopApps,
        (v) => typeof v === "boolean" || bad("stopApps", "must be a boolean", v),
      );
      return;
    }
  }
}
