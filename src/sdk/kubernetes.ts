/**
 * Per-environment settings only the kubernetes backend reads (what people add to a pod by
 * hand), and their validation: keys as Kubernetes checks them, so a typo fails at
 * declaration, not at apply.
 */
import { describeValue } from "../errors.ts";
import { fail, isPlainObject } from "./validation.ts";

/**
 * Per-environment settings for the kubernetes backend: what people add to a pod by hand.
 * @example { podAnnotations: { "prometheus.io/scrape": "true" }, nodeSelector: { pool: "gpu" } }
 */
export interface KubernetesOptions {
  podLabels?: Record<string, string>;
  podAnnotations?: Record<string, string>;
  serviceAccountName?: string;
  nodeSelector?: Record<string, string>;
  /** As in a pod spec: `{ key, operator, value, effect, tolerationSeconds }`. */
  tolerations?: Record<string, string | number>[];
}

const LABEL_KEY = /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

export function validateKubernetesOptions(value: unknown, where: string): KubernetesOptions {
  const at = `${where} kubernetes`;
  if (!isPlainObject(value))
    fail(
      "VALIDATION",
      at,
      `must be an object like { podAnnotations }, got ${describeValue(value)}`,
    );
  const out: KubernetesOptions = {};
  const stringMap = (key: string, v: unknown): Record<string, string> => {
    if (!isPlainObject(v)) fail("VALIDATION", at, `${key} must be an object of strings`);
    for (const [k, x] of Object.entries(v)) {
      if (!LABEL_KEY.test(k) || k.length > 316)
        fail(
          "VALIDATION",
          at,
          `${key} key ${JSON.stringify(k)} is not a valid Kubernetes key (e.g. "example.com/team")`,
        );
      if (typeof x !== "string")
        fail("VALIDATION", at, `${key}.${k} must be a string, got ${describeValue(x)}`);
    }
    return { ...(v as Record<string, string>) };
  };
  for (const [key, v] of Object.entries(value)) {
    switch (key) {
      case "podLabels":
      case "podAnnotations":
      case "nodeSelector":
        out[key] = stringMap(key, v);
        break;
      case "serviceAccountName":
        if (typeof v !== "string" || !/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(v))
          fail(
            "VALIDATION",
            at,
            `serviceAccountName must be a DNS-1123 name, got ${describeValue(v)}`,
          );
        out.serviceAccountName = v;
        break;
      case "tolerations":
        if (!Array.isArray(v) || v.some((t) => !isPlainObject(t)))
          fail(
            "VALIDATION",
            at,
            `tolerations must be an array of objects like { key, operator, effect }`,
          );
        out.tolerations = (v as Record<string, string | number>[]).map((t) => ({ ...t }));
        break;
      default:
        fail(
          "VALIDATION",
          at,
          `unknown field "${key}"; known: podLabels, podAnnotations, serviceAccountName, nodeSelector, tolerations`,
        );
    }
  }
  return out;
}
