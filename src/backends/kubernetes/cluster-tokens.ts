/**
 * `caravan token` on a cluster: API tokens for the namespace's gateway, kept as SHA-256 hashes
 * in the `caravan-tokens` Secret (one entry per token, so concurrent changes to different tokens
 * never clash). The gateway reads the Secret once a second: a revoked token stops working
 * within that.
 */
import { CaravanError } from "../../errors.ts";
import type { NewToken, Scope, TokenAccess, TokenInfo } from "../contract.ts";
import { checkNameFree, checkTokenName, newTokenId, newTokenValue, tokenHash } from "../tokens.ts";
import { ApiError, resourcePath, type KubeClient } from "./client.ts";
import {
  GATEWAY_LABELS,
  TOKENS_SECRET,
  decodeTokens,
  encodeToken,
  type StoredToken,
} from "./cluster-gateway.ts";
import { namespaceObject } from "./manifests.ts";

export class ClusterTokens implements TokenAccess {
  constructor(
    private readonly client: KubeClient,
    /** The namespace of the configured project/domain, and that scope. */
    private readonly namespace: string,
    private readonly scope: Scope,
  ) {}

  async create(name?: string): Promise<NewToken> {
    checkTokenName(name);
    const tokens = await this.read();
    const live = [...tokens.values()].filter((t) => !t.revokedAt);
    let chosen = name;
    if (chosen === undefined) {
      let n = tokens.size + 1;
      while (live.some((t) => t.name === `token-${n}`)) n++;
      chosen = `token-${n}`;
    }
    checkNameFree(
      chosen,
      live.some((t) => t.name === chosen),
    );
    const id = newTokenId();
    const token = newTokenValue();
    const stored: StoredToken = {
      name: chosen,
      hash: tokenHash(token),
      createdAt: new Date().toISOString(),
    };
    await this.write({ [id]: encodeToken(stored) });
    return { id, name: chosen, token };
  }

  async list(): Promise<TokenInfo[]> {
    return [...(await this.read()).entries()]
      .map(([id, t]) => ({
        id,
        name: t.name,
        createdAt: t.createdAt,
        revoked: Boolean(t.revokedAt),
      }))
      .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  }

  async revoke(idOrName: string): Promise<void> {
    const tokens = await this.read();
    const live = [...tokens.entries()].filter(([, t]) => !t.revokedAt);
    const found = live.find(([id]) => id === idOrName) ?? live.find(([, t]) => t.name === idOrName);
    if (!found) {
      throw new CaravanError(
        "NOT_FOUND",
        `no live token with id or name "${idOrName}" in namespace ${this.namespace} (caravan token list --backend kubernetes)`,
      );
    }
    const [id, token] = found;
    await this.write({ [id]: encodeToken({ ...token, revokedAt: new Date().toISOString() }) });
  }

  link(): Promise<string> {
    return Promise.reject(
      new CaravanError(
        "UNSUPPORTED",
        "caravan token link is not available with --backend kubernetes: one-time browser links need the local gateway's session store; give clients a bearer token instead (caravan token create --backend kubernetes)",
      ),
    );
  }

  private async read(): Promise<Map<string, StoredToken>> {
    const secret = await this.client.get<{ data?: Record<string, string> }>(
      "Secret",
      this.namespace,
      TOKENS_SECRET,
    );
    return decodeTokens(secret?.data);
  }

  /** Adds or replaces entries (a merge patch), creating the Secret (and namespace) if needed. */
  private async write(data: Record<string, string>, retried = false): Promise<void> {
    const path = resourcePath("Secret", this.namespace, TOKENS_SECRET);
    try {
      await this.client.call("PATCH", path, {
        body: { data },
        contentType: "application/merge-patch+json",
      });
      return;
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
    }
    if (!(await this.client.get("Namespace", undefined, this.namespace)))
      await this.client.apply(namespaceObject(this.namespace, this.scope));
    try {
      await this.client.call("POST", resourcePath("Secret", this.namespace), {
        body: {
          apiVersion: "v1",
          kind: "Secret",
          metadata: {
            name: TOKENS_SECRET,
            namespace: this.namespace,
            labels: { ...GATEWAY_LABELS },
          },
          type: "Opaque",
          data,
        },
      });
    } catch (e) {
      // Another `token create` made the Secret first: add to it.
      if (retried || !(e instanceof ApiError && e.status === 409)) throw e;
      await this.write(data, true);
    }
  }
}
