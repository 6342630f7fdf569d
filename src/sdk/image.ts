import { createHash } from "node:crypto";
import { CaravanError, describeValue } from "../errors.ts";
import { stableStringify } from "./stable.ts";

export interface ImageSpec {
  base: { kind: "debian"; node: string } | { kind: "ref"; ref: string };
  npmPackages: string[];
  aptPackages: string[];
  env: Record<string, string>;
}

/**
 * The container image an environment runs in on a cluster. Locally, apps run with the
 * machine's Node.js; the image still takes part in an environment's identity.
 * @example Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify")
 */
export class Image {
  private constructor(private readonly spec: ImageSpec) {}

  /** A Debian image with the given Node.js major. @default { node: "22" } */
  static fromDebianBase(opts: { node?: string } = {}): Image {
    const node = opts.node ?? "22";
    if (!/^\d+(\.\d+){0,2}$/.test(node)) {
      throw new CaravanError(
        "VALIDATION",
        `Image.fromDebianBase: node ${describeValue(node)} is not a Node.js version like "22"`,
      );
    }
    return new Image({ base: { kind: "debian", node }, npmPackages: [], aptPackages: [], env: {} });
  }

  /** An existing image by reference, e.g. `"node:22-slim"`. */
  static fromRef(ref: string): Image {
    if (typeof ref !== "string" || ref.trim() === "" || /\s/.test(ref)) {
      throw new CaravanError(
        "VALIDATION",
        `Image.fromRef: ${describeValue(ref)} is not an image reference like "node:22-slim"`,
      );
    }
    return new Image({ base: { kind: "ref", ref }, npmPackages: [], aptPackages: [], env: {} });
  }

  withNpmPackages(...packages: string[]): Image {
    return new Image({
      ...this.spec,
      npmPackages: [...this.spec.npmPackages, ...packages.map(checkPackage("npm"))],
    });
  }

  withAptPackages(...packages: string[]): Image {
    return new Image({
      ...this.spec,
      aptPackages: [...this.spec.aptPackages, ...packages.map(checkPackage("apt"))],
    });
  }

  withEnv(env: Record<string, string>): Image {
    for (const [k, v] of Object.entries(env)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k) || typeof v !== "string") {
        throw new CaravanError(
          "INVALID_ENV_VAR",
          `Image.withEnv: ${describeValue(k)}=${describeValue(v)} is not NAME=string`,
        );
      }
    }
    return new Image({ ...this.spec, env: { ...this.spec.env, ...env } });
  }

  /** Deterministic tag derived from the content: same spec, same tag. */
  get tag(): string {
    return createHash("sha256").update(stableStringify(this.spec)).digest("hex").slice(0, 16);
  }

  /** The normalised description, used in environment hashes. */
  toJSON(): ImageSpec & { tag: string } {
    return { ...this.spec, tag: this.tag };
  }

  dockerfile(): string {
    const lines: string[] = [];
    const { base } = this.spec;
    lines.push(
      base.kind === "debian" ? `FROM node:${base.node}-bookworm-slim` : `FROM ${base.ref}`,
    );
    if (this.spec.aptPackages.length) {
      lines.push(
        `RUN apt-get update && apt-get install -y --no-install-recommends ${this.spec.aptPackages.join(" ")} && rm -rf /var/lib/apt/lists/*`,
      );
    }
    lines.push("WORKDIR /app");
    if (this.spec.npmPackages.length) {
      lines.push(`RUN npm install --omit=dev ${this.spec.npmPackages.join(" ")}`);
    }
    for (const [k, v] of Object.entries(this.spec.env)) lines.push(`ENV ${k}=${JSON.stringify(v)}`);
    return lines.join("\n") + "\n";
  }
}

function checkPackage(kind: string) {
  return (p: string): string => {
    if (typeof p !== "string" || !/^[@a-zA-Z0-9][@a-zA-Z0-9._/:=^~<>+-]*$/.test(p)) {
      throw new CaravanError(
        "VALIDATION",
        `Image: ${describeValue(p)} is not a valid ${kind} package name`,
      );
    }
    return p;
  };
}

/** The image a JS app runs in on a cluster when its environment names none. */
export const DEFAULT_IMAGE = "node:22-bookworm-slim";

/**
 * The image reference an environment runs in on a cluster: an image reference as it is; a
 * built image (`fromDebianBase`, packages) named by its content tag, under `registry` when
 * given (`caravan image build` builds and pushes exactly this name).
 */
export function imageReference(
  name: string,
  image: (ImageSpec & { tag: string }) | undefined,
  registry?: string,
): string {
  if (!image) return DEFAULT_IMAGE;
  if (image.base.kind === "ref" && !needsBuild(image)) return image.base.ref;
  return `${registry ? `${registry.replace(/\/$/, "")}/` : ""}caravan-${name}:${image.tag}`;
}

/** Whether an image spec adds anything to its base (packages, variables): then it is built. */
export function needsBuild(image: ImageSpec): boolean {
  return (
    image.base.kind === "debian" ||
    image.npmPackages.length > 0 ||
    image.aptPackages.length > 0 ||
    Object.keys(image.env).length > 0
  );
}
