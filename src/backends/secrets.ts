/**
 * What every backend's secrets share: the rule for a secret's name and the error for secrets
 * that are not set. Where values are kept is a backend's (`SecretAccess` in registry.ts).
 */
import { CaravanError } from "../errors.ts";
import { reservedSecretEnv } from "../sdk/validation.ts";
import type { Scope } from "./contract.ts";

const NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/**
 * A secret's name: letters, digits, "_", "." and "-"; not a name every object has
 * (`__proto__`, `constructor`: a store keyed by name would mistake them), and not one of the
 * environment variables a secret may not set (`reservedSecretEnv`).
 */
export function validateSecretName(name: string): string {
  if (!NAME.test(name)) {
    throw new CaravanError(
      "USAGE",
      `secret name ${JSON.stringify(name)} is not valid: use letters, digits, "_", "." and "-", starting with a letter or "_" (e.g. API_KEY)`,
    );
  }
  if (name in Object.prototype) {
    throw new CaravanError(
      "USAGE",
      `secret name ${JSON.stringify(name)} is not allowed: it is a property of every JavaScript object; pick another name, e.g. API_KEY`,
    );
  }
  const reserved = reservedSecretEnv(name);
  if (reserved) throw new CaravanError("USAGE", `secret name ${reserved}`);
  return name;
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
