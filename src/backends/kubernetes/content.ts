/**
 * The content a pod mounts, read from the client's snapshots: the code bundle, caravan's
 * compiled runtime, and an app's file snapshot. Local snapshots refer to the runtime by its
 * absolute path on this machine; in a pod it is mounted elsewhere, so those references are
 * rewritten (deterministically: the same snapshot always gives the same bytes).
 */
import { readdirSync, readFileSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import { CaravanError } from "../../errors.ts";
import type { CodeRef, DeployRequest, Scope } from "../contract.ts";
import type { KubeClient } from "./client.ts";
import {
  LABELS,
  MANAGED_BY,
  POD_PATHS,
  contentConfigMap,
  environmentLabels,
  scopeLabels,
  selector,
  type BundleFile,
  type KubeObject,
  type ManifestContext,
} from "./manifests.ts";
import type { Deployment } from "./watch.ts";

/** The Secret a project/domain's secrets live in (pods reference it with secretKeyRef). */
export const SECRET_NAME = "caravan-secrets";

/** A ConfigMap holds at most 1 MiB; leave room for the object around the data. */
const CONFIGMAP_LIMIT = 900 * 1024;

/** Every regular file under `dir` (symlinks such as a `node_modules` link are not followed). */
function filesUnder(dir: string, skip: (path: string) => boolean = () => false): BundleFile[] {
  const out: BundleFile[] = [];
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true }).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    )) {
      const abs = join(d, entry.name);
      const rel = relative(dir, abs);
      if (entry.isDirectory()) walk(abs);
      else if (entry.isFile() && !skip(rel)) out.push({ path: rel, contents: readFileSync(abs) });
    }
  };
  walk(dir);
  return out;
}

/** The compiled runtime's directory (its main module is `<dir>/runtime/main.js`). */
export function runtimeDirOf(code: CodeRef): string {
  return dirname(dirname(code.runtime));
}

/** The runtime's content hash: the name of its content-addressed directory. */
export function runtimeHashOf(code: CodeRef): string {
  return basename(runtimeDirOf(code));
}

/**
 * The last few snapshots read, by content hash: every environment of a deploy shares the
 * bundle and the runtime, which are read (and encoded) once.
 */
const recent = new Map<string, unknown>();
function memo<T>(key: string, read: () => T): T {
  if (recent.has(key)) return recent.get(key) as T;
  const value = read();
  recent.set(key, value);
  if (recent.size > 8) recent.delete(recent.keys().next().value!);
  return value;
}

/** The bundle's files, with imports of the local runtime pointed at the pod's runtime mount. */
export function codeFiles(code: CodeRef): { files: BundleFile[]; entry: string } {
  return memo(`code:${code.hash}:${code.runtime}`, () => readCode(code));
}

function readCode(code: CodeRef): { files: BundleFile[]; entry: string } {
  const dir = dirname(code.entry);
  const runtimeDir = runtimeDirOf(code);
  const files = filesUnder(dir).map((f) =>
    f.path.endsWith(".js")
      ? {
          path: f.path,
          contents: Buffer.from(
            Buffer.from(f.contents).toString("utf8").split(runtimeDir).join(POD_PATHS.runtime),
          ),
        }
      : f,
  );
  checked(files, "the code bundle");
  return { files, entry: relative(dir, code.entry) };
}

/** caravan's compiled runtime (source maps left out: the user's own code keeps its maps). */
export function runtimeFiles(code: CodeRef): BundleFile[] {
  return memo(`runtime:${runtimeHashOf(code)}`, () =>
    checked(
      filesUnder(runtimeDirOf(code), (p) => p.endsWith(".map")),
      "caravan's runtime",
    ),
  );
}

/** An app's file snapshot (`include`, File/Dir inputs). */
export function snapshotFiles(dir: string): BundleFile[] {
  return checked(filesUnder(dir), "the app's files (include, File/Dir inputs)");
}

function checked(files: BundleFile[], what: string): BundleFile[] {
  const size = files.reduce((n, f) => n + f.contents.length, 0);
  if (size > CONFIGMAP_LIMIT) {
    throw new CaravanError(
      "BUNDLE_FAILED",
      `${what} is ${Math.round(size / 1024)} KiB, more than a ConfigMap can hold (${CONFIGMAP_LIMIT / 1024} KiB); keep large files in the image (Image.withAptPackages / withNpmPackages, or an image reference)`,
      { size },
    );
  }
  return files;
}

/** caravan's compiled runtime as a ConfigMap, shared by the namespace's pods of this scope. */
export function runtimeContent(req: DeployRequest, namespace: string) {
  return contentConfigMap(
    `caravan-runtime-${runtimeHashOf(req.code)}`,
    namespace,
    scopeLabels(req.scope),
    "runtime",
    runtimeFiles(req.code),
  );
}

/** The request's content-addressed ConfigMaps and what the manifests refer to. Reads files only. */
export function contentFor(
  req: DeployRequest,
  namespace: string,
  registry?: string,
): { ctx: ManifestContext; content: KubeObject[] } {
  const labels = environmentLabels(req.scope, req.name);
  // The bundle and the runtime are the same for every environment of a deploy: one
  // ConfigMap each per namespace, shared (and collected when nothing refers to them).
  const shared = scopeLabels(req.scope);
  const { files: code, entry } = codeFiles(req.code);
  const codeMap = contentConfigMap(
    `caravan-code-${req.code.hash}`,
    namespace,
    shared,
    "code",
    code,
  );
  const content = [codeMap.object];
  const ctx: ManifestContext = {
    namespace,
    code: { name: codeMap.object.metadata.name, items: codeMap.items },
    runtime: { name: "", items: [] },
    inputs: { ...req.inputs },
    entry,
    secretName: SECRET_NAME,
    now: new Date().toISOString(),
    ...(registry ? { registry } : {}),
  };
  // Whatever runs in caravan's runtime: a task environment, a JS app, a function job.
  const inRuntime =
    req.spec.kind === "task" ||
    (req.spec.kind === "app" ? req.spec.serveKind !== "command" : req.spec.runKind === "function");
  if (inRuntime) {
    const runtime = runtimeContent(req, namespace);
    content.push(runtime.object);
    ctx.runtime = { name: runtime.object.metadata.name, items: runtime.items };
  }
  if (req.files) {
    const files = contentConfigMap(
      `${req.name}-files-${req.files.hash}`,
      namespace,
      labels,
      "files",
      snapshotFiles(req.files.dir),
    );
    content.push(files.object);
    ctx.files = { name: files.object.metadata.name, items: files.items, localDir: req.files.dir };
    // File/Dir inputs point into the snapshot: in a pod, into its mount.
    for (const [k, v] of Object.entries(ctx.inputs))
      if (v.startsWith(req.files.dir))
        ctx.inputs[k] = POD_PATHS.files + v.slice(req.files.dir.length);
  }
  return { ctx, content };
}

/**
 * The content ConfigMaps of each namespace: listed once per backend object, each applied
 * once however many environments share it, and collected when nothing refers to it.
 */
export class ContentStore {
  /** The content ConfigMaps of each namespace, and those being applied, by name. */
  private readonly content = new Map<string, Promise<Map<string, Promise<void>>>>();

  constructor(
    private readonly client: KubeClient,
    private readonly apply: (object: KubeObject, env: string) => Promise<void>,
  ) {}

  /**
   * Applies the content ConfigMaps the namespace lacks (immutable and named by content: one
   * that exists holds these bytes). The namespace's content is listed once per backend
   * object, and each ConfigMap applied once, however many environments share it.
   */
  async upload(req: DeployRequest, namespace: string, content: KubeObject[]) {
    let existing = this.content.get(namespace);
    if (!existing) {
      existing = this.client
        .list<KubeObject>(
          "ConfigMap",
          namespace,
          `${selector(scopeLabels(req.scope))},${LABELS.content}`,
        )
        .then((l) => new Map(l.items.map((m) => [m.metadata.name, Promise.resolve()])));
      this.content.set(namespace, existing);
      existing.catch(() => this.content.delete(namespace));
    }
    const known = await existing;
    await Promise.all(
      content.map((m) => {
        let applied = known.get(m.metadata.name);
        if (!applied) {
          applied = this.apply(m, req.name);
          known.set(m.metadata.name, applied);
          applied.catch(() => known.delete(m.metadata.name));
        }
        return applied;
      }),
    );
  }

  /**
   * Deletes the namespace's shared content ConfigMaps that no Deployment or task environment
   * refers to any more (after a delete: older revisions' ReplicaSets may still use them until
   * then).
   */
  async collect(namespace: string, scope: Scope): Promise<void> {
    const managed = selector(scopeLabels(scope));
    const [deployments, maps] = await Promise.all([
      // Every caravan Deployment of the namespace (the gateway's too) may mount shared content.
      this.client.list<Deployment>("Deployment", namespace, `${MANAGED_BY}=caravan`),
      this.client.list<KubeObject>("ConfigMap", namespace, managed),
    ]);
    const used = new Set<string>();
    for (const d of deployments.items) {
      const volumes = ((d.spec as any)?.template?.spec?.volumes ?? []) as {
        configMap?: { name: string };
      }[];
      for (const v of volumes) if (v.configMap) used.add(v.configMap.name);
    }
    for (const m of maps.items) {
      const data = (m as { data?: Record<string, string> }).data;
      if (m.metadata.labels?.[LABELS.kind] === "task" && data) {
        if (data.code) used.add(data.code);
        if (data.runtime) used.add(data.runtime);
      }
    }
    const shared = maps.items.filter(
      (m) =>
        m.metadata.labels?.[LABELS.content] &&
        !m.metadata.labels[LABELS.environment] &&
        !used.has(m.metadata.name),
    );
    await Promise.all(
      shared.map((m) => this.client.delete("ConfigMap", namespace, m.metadata.name)),
    );
    this.content.delete(namespace);
  }
}
