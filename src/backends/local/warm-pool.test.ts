import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { DeployRequest } from "../contract.ts";
import { WarmPool, bareImports, preloadSource } from "./warm-pool.ts";

describe("bareImports (what a warm process preloads, learned from a bundle)", () => {
  it("lists the packages an esbuild bundle imports, not builtins, paths or URLs", () => {
    const bundle = [
      'import Fastify from "fastify";',
      'import { serve } from "@hono/node-server";',
      "import {",
      "  FastifyAppEnvironment",
      '} from "/home/u/.caravan/runtime/abc/public/fastify.js";',
      'import { readFileSync } from "node:fs";',
      'import { join } from "path";',
      'import "./side-effect.js";',
      'import "reflect-metadata";',
      'import * as z from "zod/v4";',
      'import Fastify2 from "fastify";',
      'const lazy = () => import("lodash");',
      '  import notTopLevel from "nope";',
    ].join("\n");
    expect(bareImports(bundle)).toEqual([
      "fastify",
      "@hono/node-server",
      "reflect-metadata",
      "zod/v4",
    ]);
  });
});

describe("WarmPool.allows (which processes may start warm)", () => {
  const req = (warmPool?: DeployRequest["warmPool"]) =>
    ({ ...(warmPool ? { warmPool } : {}) }) as DeployRequest;
  const env = { PATH: "/usr/bin", PORT: "3000", CARAVAN_APP_NAME: "a" };

  it("allows an ordinary app while the pool is on (by default or with a size)", () => {
    expect(WarmPool.allows(req(), env)).toBe(true);
    expect(WarmPool.allows(req({ size: 2 }), env)).toBe(true);
  });

  it("refuses when the deploy turned the pool off (size 0: config false or --no-warm)", () => {
    expect(WarmPool.allows(req({ size: 0 }), env)).toBe(false);
  });

  it("refuses variables node reads as it starts, which a running process cannot apply", () => {
    for (const name of [
      "NODE_OPTIONS",
      "NODE_EXTRA_CA_CERTS",
      "UV_THREADPOOL_SIZE",
      "OPENSSL_CONF",
      "SSL_CERT_FILE",
    ])
      expect(WarmPool.allows(req(), { ...env, [name]: "x" }), name).toBe(false);
  });

  it("refuses an environment larger than the room a warm process keeps for /proc/<pid>/environ", () => {
    expect(WarmPool.allows(req(), { ...env, BIG: "x".repeat(64 * 1024) })).toBe(false);
    expect(WarmPool.allows(req(), { ...env, BIG: "x".repeat(60 * 1024) })).toBe(true);
  });
});

describe("WarmPool.note (what it learns to preload)", () => {
  it("learns the web frameworks a bundle imports, never a package that reads its environment on import", async () => {
    const dir = mkdtempSync(join(tmpdir(), "caravan-warm-"));
    mkdirSync(join(dir, "node_modules"));
    const entry = join(dir, "bundle.js");
    writeFileSync(
      entry,
      [
        'import "dotenv/config";',
        'import Fastify from "fastify";',
        'import cfg from "config";',
      ].join("\n"),
    );
    // Never quiet: nothing is spawned, only what it would preload is decided.
    const pool = new WarmPool({ dir, logFile: join(dir, "log"), quiet: () => false });
    try {
      pool.note({ code: { entry, runtime: join(dir, "main.js") } } as DeployRequest);
      expect(pool.stats().preload).toEqual(["fastify"]);
    } finally {
      await pool.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("preloadSource (the module a warm process imports for a package)", () => {
  it("loads the package's own dependencies too, which it would load only on first use; one that cannot load is left to the app", () => {
    const dir = mkdtempSync(join(tmpdir(), "caravan-warm-"));
    const pkg = (name: string, files: Record<string, string>) => {
      mkdirSync(join(dir, "node_modules", name), { recursive: true });
      for (const [file, text] of Object.entries(files))
        writeFileSync(join(dir, "node_modules", name, file), text);
    };
    try {
      // A framework that requires a dependency only when an instance is made (as fastify does).
      pkg("fw", {
        "package.json": JSON.stringify({
          name: "fw",
          main: "index.js",
          dependencies: { "lazy-dep": "1", broken: "1", "esm-only": "1" },
        }),
        "index.js": 'module.exports = () => require("lazy-dep");\n',
      });
      pkg("lazy-dep", {
        "package.json": JSON.stringify({ name: "lazy-dep", main: "index.js" }),
        "index.js": "globalThis.lazyDepLoads = (globalThis.lazyDepLoads ?? 0) + 1;\n",
      });
      pkg("broken", {
        "package.json": JSON.stringify({ name: "broken", main: "index.js" }),
        "index.js": 'throw new Error("not here");\n',
      });
      pkg("esm-only", {
        "package.json": JSON.stringify({
          name: "esm-only",
          type: "module",
          exports: { import: "./index.js" },
        }),
        "index.js": "export default 1;\n",
      });
      writeFileSync(
        join(dir, "preload.mjs"),
        preloadSource("fw", ["lazy-dep", "broken", "esm-only"]),
      );
      writeFileSync(
        join(dir, "check.mjs"),
        [
          'await import("./preload.mjs");',
          "const preloaded = globalThis.lazyDepLoads ?? 0;",
          'const { default: fw } = await import("fw");',
          "fw();",
          "console.log(JSON.stringify({ preloaded, after: globalThis.lazyDepLoads }));",
        ].join("\n"),
      );
      const out = execFileSync(process.execPath, [join(dir, "check.mjs")], { encoding: "utf8" });
      // Loaded by the preload, and the framework's own require found it loaded (not twice).
      expect(JSON.parse(out)).toEqual({ preloaded: 1, after: 1 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("is the bare import alone for a package without dependencies", () => {
    expect(preloadSource("tiny", [])).toBe('import "tiny";\n');
  });
});
