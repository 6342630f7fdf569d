import { describe, expect, it } from "vitest";
import { bareImports } from "./warm-pool.ts";

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
