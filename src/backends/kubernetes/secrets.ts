/**
 * Secrets on a cluster: one Secret per project/domain (`caravan-secrets` in its namespace),
 * a key per secret. Pods read values through `secretKeyRef`; the client reads them only to
 * check that the secrets a deploy needs exist and to fingerprint them (an HMAC under a random
 * key kept in the same Secret), so a changed value changes the revision of the apps that use
 * it — and rolls them — while no value ever appears in a pod spec, an annotation or a log.
 */
import { createHmac, randomBytes } from "node:crypto";
import type { ResolvedConfig } from "../../sdk/config.ts";
import { stableStringify } from "../../sdk/stable.ts";
import type { Scope } from "../contract.ts";
import type { SecretAccess } from "../registry.ts";
import { ApiError, resourcePath, type KubeClient } from "./client.ts";
import { loadKubeClient } from "./kubeconfig.ts";
import { SECRET_NAME } from "./content.ts";
import { namespaceFor, namespaceObject, scopeLabels } from "./manifests.ts";

/** The Secret's own entry: the HMAC key of fingerprints (never a user's secret: names start with a letter or "_"). */
const FINGERPRINT_KEY = ".caravan-fingerprint-key";

type SecretObject = { data?: Record<string, string> };

export function kubernetesSecrets(config: ResolvedConfig): SecretAccess {
  const namespaceOf = (scope: Scope) => namespaceFor(scope, config.kubernetes?.namespace);
  /** One client per operation: nothing kept open between CLI steps. */
  const withClient = async <T>(fn: (client: KubeClient) => Promise<T>): Promise<T> => {
    const client = loadKubeClient(config.kubernetes);
    try {
      return await fn(client);
    } finally {
      client.close();
    }
  };
  const read = (client: KubeClient, scope: Scope) =>
    client.get<SecretObject>("Secret", namespaceOf(scope), SECRET_NAME);
  const values = (secret: SecretObject | undefined) =>
    Object.fromEntries(
      Object.entries(secret?.data ?? {})
        .filter(([k]) => k !== FINGERPRINT_KEY)
        .map(([k, v]) => [k, Buffer.from(v, "base64").toString("utf8")]),
    );
  const patch = (client: KubeClient, scope: Scope, data: Record<string, string | null>) =>
    client.call("PATCH", resourcePath("Secret", namespaceOf(scope), SECRET_NAME), {
      body: { data },
      contentType: "application/merge-patch+json",
    });

  return {
    where: `the Secret ${SECRET_NAME} of the project/domain's namespace`,
    set: (scope, name, value) =>
      withClient(async (client) => {
        const namespace = namespaceOf(scope);
        const data = { [name]: Buffer.from(value).toString("base64") };
        if (await read(client, scope)) return void (await patch(client, scope, data));
        if (!(await client.get("Namespace", undefined, namespace)))
          await client.apply(namespaceObject(namespace, scope));
        try {
          await client.call("POST", resourcePath("Secret", namespace), {
            body: {
              apiVersion: "v1",
              kind: "Secret",
              metadata: { name: SECRET_NAME, namespace, labels: scopeLabels(scope) },
              type: "Opaque",
              data: { ...data, [FINGERPRINT_KEY]: randomBytes(32).toString("base64") },
            },
          });
        } catch (e) {
          // Created meanwhile by another `secret set`: add ours to it.
          if (!(e instanceof ApiError && e.status === 409)) throw e;
          await patch(client, scope, data);
        }
      }),
    list: (scope) =>
      withClient(async (client) => Object.keys(values(await read(client, scope))).sort()),
    delete: (scope, name) =>
      withClient(async (client) => {
        if (!(name in values(await read(client, scope)))) return false;
        await patch(client, scope, { [name]: null });
        return true;
      }),
    missing: (scope, keys) =>
      withClient(async (client) => {
        const present = values(await read(client, scope));
        return [...new Set(keys.filter((k) => !(k in present)))];
      }),
    fingerprint: (scope, keys) =>
      withClient(async (client) => {
        if (!keys.length) return "";
        const secret = await read(client, scope);
        const present = values(secret);
        const key = secret?.data?.[FINGERPRINT_KEY] ?? "";
        const chosen = Object.fromEntries([...keys].sort().map((k) => [k, present[k] ?? null]));
        return createHmac("sha256", Buffer.from(key, "base64"))
          .update(stableStringify(chosen))
          .digest("hex");
      }),
  };
}
