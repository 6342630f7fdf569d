/**
 * The kubernetes backend, as the registry sees it: the cluster named by the kubeconfig
 * (KUBECONFIG, ~/.kube/config or in-cluster; `--context` or `kubernetes.context` picks one).
 * Nothing to start: the cluster is the store.
 */
import type { ResolvedConfig } from "../../sdk/config.ts";
import type { BackendProvider } from "../registry.ts";
import { KubernetesBackend } from "./backend.ts";
import { loadKubeClient } from "./kubeconfig.ts";
import { kubernetesSecrets } from "./secrets.ts";

export const provider: BackendProvider = {
  name: "kubernetes",
  previews: true,
  async open(config: ResolvedConfig) {
    return new KubernetesBackend(loadKubeClient(config.kubernetes), config);
  },
  secrets: kubernetesSecrets,
};
