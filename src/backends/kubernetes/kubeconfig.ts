/**
 * The CLI's way to the cluster: the standard kubeconfig (KUBECONFIG, ~/.kube/config, or a
 * pod's service account), read by `@kubernetes/client-node` so every way of authenticating
 * works (tokens, client certificates, exec plugins).
 */
import { KubeConfig } from "@kubernetes/client-node";
import { CaravanError } from "../../errors.ts";
import type { KubernetesConfig } from "../../sdk/config.ts";
import { KubeClient } from "./client.ts";

/** A client for the kubeconfig's cluster; `context` picks one of its contexts. */
export function loadKubeClient(config: KubernetesConfig = {}): KubeClient {
  const kc = new KubeConfig();
  try {
    kc.loadFromDefault();
  } catch (e) {
    throw new CaravanError(
      "CONFIG",
      `cannot read the kubeconfig (${process.env.KUBECONFIG ?? "~/.kube/config"}): ${(e as Error).message}`,
    );
  }
  const context = config.context ?? process.env.CARAVAN_K8S_CONTEXT ?? kc.getCurrentContext();
  if (config.context || process.env.CARAVAN_K8S_CONTEXT) {
    if (!kc.getContexts().some((c) => c.name === context)) {
      throw new CaravanError(
        "CONFIG",
        `kubeconfig context "${context}" does not exist; known: ${
          kc
            .getContexts()
            .map((c) => c.name)
            .join(", ") || "none"
        } (set KUBECONFIG or --context)`,
      );
    }
    kc.setCurrentContext(context);
  }
  const cluster = kc.getCurrentCluster();
  if (!cluster || !context) {
    throw new CaravanError(
      "CONFIG",
      "no Kubernetes cluster is configured: set KUBECONFIG to a kubeconfig file, or give --context, or put kubernetes: { context } in caravan.config.*",
    );
  }
  return new KubeClient({
    server: cluster.server,
    context,
    authorize: (options) => kc.applyToHTTPSOptions(options),
  });
}
