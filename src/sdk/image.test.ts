import { describe, expect, it } from "vitest";
import { Image, imageReference, needsBuild } from "./image.ts";
import { errorOf } from "../test-helpers.ts";

describe("Image", () => {
  it("starts from a Debian base with Node 22 by default", () => {
    expect(Image.fromDebianBase().toJSON()).toMatchObject({
      base: { kind: "debian", node: "22" },
      npmPackages: [],
      aptPackages: [],
      env: {},
    });
    expect(Image.fromDebianBase({ node: "20.19" }).dockerfile()).toMatch(
      /^FROM node:20\.19-bookworm-slim\n/,
    );
  });

  it("builds with a chain, each step returning a new image", () => {
    const base = Image.fromDebianBase({ node: "22" });
    const withFastify = base.withNpmPackages("fastify", "@fastify/cors@^11");
    const full = withFastify.withAptPackages("curl").withEnv({ NODE_ENV: "production" });
    expect(base.toJSON().npmPackages).toEqual([]);
    expect(withFastify.toJSON().aptPackages).toEqual([]);
    expect(full.toJSON()).toMatchObject({
      npmPackages: ["fastify", "@fastify/cors@^11"],
      aptPackages: ["curl"],
      env: { NODE_ENV: "production" },
    });
    expect(full.withNpmPackages("pino").toJSON().npmPackages).toEqual([
      "fastify",
      "@fastify/cors@^11",
      "pino",
    ]);
  });

  it("renders a Dockerfile", () => {
    const image = Image.fromRef("node:22-slim")
      .withAptPackages("curl", "git")
      .withNpmPackages("fastify")
      .withEnv({ A: "1 2" });
    expect(image.dockerfile()).toBe(
      [
        "FROM node:22-slim",
        "RUN apt-get update && apt-get install -y --no-install-recommends curl git && rm -rf /var/lib/apt/lists/*",
        "WORKDIR /app",
        "RUN npm install --omit=dev fastify",
        'ENV A="1 2"',
        "",
      ].join("\n"),
    );
  });

  it("has a tag derived from its content", () => {
    const a = Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify");
    const b = Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify");
    expect(a.tag).toMatch(/^[0-9a-f]{16}$/);
    expect(a.tag).toBe(b.tag);
    expect(a.toJSON().tag).toBe(a.tag);
    expect(a.withEnv({ X: "1" }).withEnv({ Y: "2" }).tag).toBe(
      b.withEnv({ Y: "2" }).withEnv({ X: "1" }).tag,
    );
    const different = [
      Image.fromDebianBase({ node: "20" }).withNpmPackages("fastify"),
      Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify@5"),
      a.withAptPackages("curl"),
      a.withEnv({ X: "1" }),
      Image.fromRef("node:22"),
    ].map((i) => i.tag);
    expect(new Set([a.tag, ...different]).size).toBe(different.length + 1);
  });

  it.each(["latest", "v22", "", "22.x"])("rejects the Node version %j", (node) => {
    const err = errorOf(() => Image.fromDebianBase({ node }));
    expect(err.code).toBe("VALIDATION");
    expect(err.message).toContain("Image.fromDebianBase");
    expect(err.message).toContain(JSON.stringify(node));
    expect(err.message).toContain("Node.js version");
  });

  it.each(["", "  ", "node 22", 42])("rejects the image reference %j", (ref) => {
    const err = errorOf(() => Image.fromRef(ref as string));
    expect(err.code).toBe("VALIDATION");
    expect(err.message).toContain("Image.fromRef");
    expect(err.message).toContain("is not an image reference");
  });

  it.each(["", "has space", "-leading", "a;rm -rf /"])("rejects the package name %j", (name) => {
    const err = errorOf(() => Image.fromDebianBase().withNpmPackages("ok", name));
    expect(err.code).toBe("VALIDATION");
    expect(err.message).toContain(`${JSON.stringify(name)} is not a valid npm package name`);
    expect(errorOf(() => Image.fromDebianBase().withAptPackages(name)).message).toContain(
      "apt package name",
    );
  });

  it("rejects bad environment variables", () => {
    const err = errorOf(() => Image.fromDebianBase().withEnv({ "BAD-NAME": "1" }));
    expect(err.code).toBe("INVALID_ENV_VAR");
    expect(err.message).toContain('"BAD-NAME"');
    const value = errorOf(() => Image.fromDebianBase().withEnv({ GOOD: 1 as never }));
    expect(value.code).toBe("INVALID_ENV_VAR");
    expect(value.message).toContain('"GOOD"=1 is not NAME=string');
  });
});

describe("image references on a cluster", () => {
  it("runs an image reference as it is, and builds one that adds anything to it", () => {
    const ref = Image.fromRef("python:3.12");
    expect(imageReference("api", ref.toJSON())).toBe("python:3.12");
    expect(needsBuild(ref.toJSON())).toBe(false);
    // Variables are part of the image: a reference with them must be built, not run bare.
    const withEnv = ref.withEnv({ MODE: "fast" });
    expect(needsBuild(withEnv.toJSON())).toBe(true);
    expect(imageReference("api", withEnv.toJSON(), "registry.example.com/team/")).toBe(
      `registry.example.com/team/caravan-api:${withEnv.tag}`,
    );
    expect(imageReference("api", undefined)).toBe("node:22-bookworm-slim");
  });
});
