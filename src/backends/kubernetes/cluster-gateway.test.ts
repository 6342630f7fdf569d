import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, normalize } from "node:path";
import { describe, expect, test } from "vitest";
import { buildRuntime } from "../runtime-build.ts";
import {
  GATEWAY_ENTRY,
  decodeTokens,
  encodeToken,
  ingressHost,
  pickPublicPort,
} from "./cluster-gateway.ts";
import type { AppSpec } from "../contract.ts";

describe("the cluster gateway's bundle", () => {
  test("imports nothing but node's own modules (a pod has no node_modules for it)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "caravan-gateway-bundle-"));
    try {
      const runtime = await buildRuntime(dir);
      const outside = new Set<string>();
      const seen = new Set<string>();
      const walk = (file: string) => {
        if (seen.has(file)) return;
        seen.add(file);
        const code = readFileSync(file, "utf8");
        const specifiers = [
          // import … from "x" / export … from "x" / import "x" (esbuild writes them at line start)
          ...code.matchAll(/^\s*(?:import|export)\b[^;]*?from\s*["']([^"']+)["']/gm),
          ...code.matchAll(/^\s*import\s*["']([^"']+)["']/gm),
          ...code.matchAll(/\bimport\(\s*["']([^"']+)["']\s*\)/g),
        ];
        for (const [, spec] of specifiers) {
          if (spec!.startsWith(".")) walk(normalize(join(dirname(file), spec!)));
          else outside.add(spec!);
        }
      };
      walk(join(runtime, `${GATEWAY_ENTRY}.js`));
      expect(seen.size).toBeGreaterThan(1);
      expect([...outside].filter((s) => !s.startsWith("node:"))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("public ports", () => {
  test("an app keeps its port; a new one gets its name's slot, or the next free one", () => {
    const first = pickPublicPort("web", new Set());
    expect(first).toBeGreaterThanOrEqual(10_000);
    expect(first).toBeLessThan(30_000);
    expect(pickPublicPort("web", new Set())).toBe(first);
    expect(pickPublicPort("web", new Set([first]))).not.toBe(first);
    expect(pickPublicPort("web", new Set([first]), 12345)).toBe(12345);
  });
});

describe("ingress hosts", () => {
  const app = (ingress?: AppSpec["ingress"]) => ({ ingress }) as AppSpec;
  test("a custom domain as is; a subdomain under the configured domain; else none", () => {
    expect(ingressHost(app({ customDomain: "shop.example.com" }), "apps.test")).toBe(
      "shop.example.com",
    );
    expect(ingressHost(app({ subdomain: "web" }), "apps.test")).toBe("web.apps.test");
    expect(ingressHost(app({ subdomain: "web" }))).toBeUndefined();
    expect(ingressHost(app(), "apps.test")).toBeUndefined();
  });
});

describe("stored tokens", () => {
  test("round-trip through the Secret's encoding; foreign entries are skipped", () => {
    const token = { name: "ci", hash: "ab".repeat(32), createdAt: "2026-01-01T00:00:00.000Z" };
    const decoded = decodeTokens({ t1: encodeToken(token), junk: "bm90IGpzb24=" });
    expect([...decoded]).toEqual([["t1", token]]);
  });
});
