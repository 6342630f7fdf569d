/**
 * The local secret store: `$CARAVAN_HOME/secrets.json`, readable only by its owner (0600),
 * one map of name -> value per project/domain, plus a random key for the keyed hash that
 * makes a changed secret change an app's revision. Values are read here (by the CLI's
 * `secret` commands, and by the control plane when it launches a process) and nowhere else:
 * they never travel through the API, a deploy request, the state database or a log.
 */
import { createHmac, randomBytes } from "node:crypto";
import { chmodSync, existsSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { CaravanError } from "../../errors.ts";
import type { Scope } from "../contract.ts";
import { stableStringify } from "../../sdk/stable.ts";

interface SecretFile {
  /** Hex key for the HMAC of secret values (per home, never leaves this file). */
  key: string;
  /** `"project/domain"` -> name -> value. */
  scopes: Record<string, Record<string, string>>;
}

const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

export function validateSecretName(name: string): string {
  if (!NAME.test(name)) {
    throw new CaravanError(
      "USAGE",
      `secret name ${JSON.stringify(name)} is not valid: use letters, digits, "_", "." and "-", starting with a letter or "_" (e.g. API_KEY)`,
    );
  }
  return name;
}

const scopeKey = (scope: Scope) => `${scope.project}/${scope.domain}`;

export class SecretStore {
  constructor(private readonly file: string) {}

  private read(): SecretFile {
    if (!existsSync(this.file)) return { key: randomBytes(32).toString("hex"), scopes: {} };
    try {
      return JSON.parse(readFileSync(this.file, "utf8")) as SecretFile;
    } catch (e) {
      throw new CaravanError(
        "CONFIG",
        `the secret store ${this.file} is not readable: ${(e as Error).message}`,
      );
    }
  }

  private write(data: SecretFile): void {
    const tmp = `${this.file}.tmp-${process.pid}`;
    writeFileSync(tmp, JSON.stringify(data), { mode: 0o600 });
    chmodSync(tmp, 0o600);
    renameSync(tmp, this.file);
  }

  set(scope: Scope, name: string, value: string): void {
    validateSecretName(name);
    const data = this.read();
    (data.scopes[scopeKey(scope)] ??= {})[name] = value;
    this.write(data);
  }

  /** Secret names in `scope`, sorted. */
  list(scope: Scope): string[] {
    return Object.keys(this.read().scopes[scopeKey(scope)] ?? {}).sort();
  }

  /** True when it existed. */
  delete(scope: Scope, name: string): boolean {
    const data = this.read();
    const scoped = data.scopes[scopeKey(scope)];
    if (!scoped || !(name in scoped)) return false;
    delete scoped[name];
    this.write(data);
    return true;
  }

  /** The names among `names` that are not set in `scope`. */
  missing(scope: Scope, names: string[]): string[] {
    const scoped = this.read().scopes[scopeKey(scope)] ?? {};
    return [...new Set(names.filter((n) => !(n in scoped)))];
  }

  /** Values by name; throws MISSING_SECRET naming every missing one. */
  resolve(scope: Scope, names: string[], app: string): Record<string, string> {
    const scoped = this.read().scopes[scopeKey(scope)] ?? {};
    const missing = names.filter((n) => !(n in scoped));
    if (missing.length) throw missingSecrets(scope, { [app]: missing });
    return Object.fromEntries(names.map((n) => [n, scoped[n]!]));
  }

  /**
   * A keyed hash (HMAC-SHA256 with this home's random key) of the named values: it changes
   * when a value changes, and tells nothing about the values without the key.
   */
  fingerprint(scope: Scope, names: string[]): string {
    if (names.length === 0) return "";
    const data = this.read();
    if (!existsSync(this.file)) this.write(data); // keep the key stable from now on
    const scoped = data.scopes[scopeKey(scope)] ?? {};
    const values = Object.fromEntries([...names].sort().map((n) => [n, scoped[n] ?? null]));
    return createHmac("sha256", Buffer.from(data.key, "hex"))
      .update(stableStringify(values))
      .digest("hex");
  }
}

/** `missing`: app name -> secret names it lacks. */
export function missingSecrets(scope: Scope, missing: Record<string, string[]>): CaravanError {
  const names = [...new Set(Object.values(missing).flat())].sort();
  const apps = Object.entries(missing)
    .map(([app, ns]) => `${app} needs ${ns.join(", ")}`)
    .join("; ");
  return new CaravanError(
    "MISSING_SECRET",
    `secret${names.length === 1 ? "" : "s"} ${names.join(", ")} ${names.length === 1 ? "is" : "are"} not set in ${scope.project}/${scope.domain} (${apps}); set ${names.length === 1 ? "it" : "each"} with: caravan secret set ${names[0]} --project ${scope.project} --domain ${scope.domain} < file`,
    { secrets: names },
  );
}
