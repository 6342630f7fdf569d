/**
 * The content a pod mounts, read from the client's snapshots: the code bundle, caravan's
 * compiled runtime, and an app's file snapshot. Local snapshots refer to the runtime by its
 * absolute path on this machine; in a pod it is mounted elsewhere, so those references are
 * rewritten (deterministically: the same snapshot always gives the same bytes).
 */
import { readdirSync, readFileSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import { CaravanError } from "../../errors.ts";
import type { CodeRef } from "../contract.ts";
import { POD_PATHS, type BundleFile } from "./manifests.ts";

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

/** The bundle's files, with imports of the local runtime pointed at the pod's runtime mount. */
export function codeFiles(code: CodeRef): { files: BundleFile[]; entry: string } {
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
  return checked(
    filesUnder(runtimeDirOf(code), (p) => p.endsWith(".map")),
    "caravan's runtime",
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
