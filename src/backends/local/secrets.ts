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
import { missingSecrets, validateSecretName } from "../secrets.ts";

interface SecretFile {
  /** Hex key for the HMAC of secret values (per home, never leaves this file). */
  key: string;
  /** `"project/domain"` -> name -> value. */
  scopes: Record<string, Record<string, string>>;
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
    if (!scoped || !Object.hasOwn(scoped, name)) return false;
    delete scoped[name];
    this.write(data);
    return true;
  }

  /** The names among `names` that are not set in `scope`. */
  missing(scope: Scope, names: string[]): string[] {
    const scoped = this.read().scopes[scopeKey(scope)] ?? {};
    return [...new Set(names.filter((n) => !Object.hasOwn(scoped, n)))];
  }

  /** Values by name; throws MISSING_SECRET naming every missing one. */
  resolve(scope: Scope, names: string[], app: string): Record<string, string> {
    const scoped = this.read().scopes[scopeKey(scope)] ?? {};
    const missing = names.filter((n) => !Object.hasOwn(scoped, n));
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
    const values = Object.fromEntries(
      [...names].sort().map((n) => [n, Object.hasOwn(scoped, n) ? scoped[n] : null]),
    );
    return createHmac("sha256", Buffer.from(data.key, "hex"))
      .update(stableStringify(values))
      .digest("hex");
  }
}
