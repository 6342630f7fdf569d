/**
 * File snapshots of an app: what `include` names (paths relative to the declaring file) and
 * its File/Dir inputs, copied into one immutable, content-addressed directory under
 * `$CARAVAN_HOME/files/<hash>/`. A command app with `include` runs in that directory; file
 * inputs point into it. Editing the originals after a deploy changes nothing until the next.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, realpathSync, statSync } from "node:fs";
import { basename, dirname, isAbsolute, join, normalize, relative, resolve, sep } from "node:path";
import { CaravanError } from "../errors.ts";
import type { AppEnvironment, JobEnvironment } from "../sdk/environment.ts";
import { inputValueKind } from "../sdk/inputs.ts";
import { writeContentAddressed } from "./snapshot.ts";

export interface FilesSnapshot {
  /** Content hash (names and contents). */
  hash: string;
  /** Absolute directory. */
  dir: string;
  /** Absolute path of each File/Dir input's copy, by input name. */
  inputs: Record<string, string>;
}

function inside(rel: string): boolean {
  return rel !== "" && rel !== ".." && !rel.startsWith(`..${sep}`) && !isAbsolute(rel);
}

/** `real` is `root` or below it (both real paths). */
function within(root: string, real: string): boolean {
  const rel = relative(root, real);
  return rel === "" || inside(rel);
}

/**
 * Copies `src` (a file, or a directory's files) into `out` at `dest`. Symbolic links are
 * followed only where they lead: every path's real path must stay inside `root` (a real
 * path), so a link to /etc/passwd in a project is refused, not copied and served.
 */
function collect(
  src: string,
  dest: string,
  out: Map<string, Uint8Array>,
  what: string,
  root: string,
  dirOnly?: boolean,
): void {
  if (!existsSync(src))
    throw new CaravanError("INVALID_INPUT", `${what}: ${src} does not exist`, { path: src });
  staysIn(root, src, what);
  const st = statSync(src);
  if (dirOnly === true && !st.isDirectory())
    throw new CaravanError("INVALID_INPUT", `${what}: ${src} is not a directory`, { path: src });
  if (dirOnly === false && !st.isFile())
    throw new CaravanError("INVALID_INPUT", `${what}: ${src} is not a file`, { path: src });
  if (st.isDirectory()) {
    for (const entry of readdirSync(src).sort())
      collect(join(src, entry), join(dest, entry), out, what, root);
  } else if (st.isFile()) {
    out.set(dest, readFileSync(src));
  }
}

/** Refuses `src` when its real path (through symbolic links) leaves `root`. */
function staysIn(root: string, src: string, what: string): void {
  const real = realpathSync(src);
  if (!within(root, real))
    throw new CaravanError(
      "VALIDATION",
      `${what}: ${src} resolves (through a symbolic link) to ${real}, outside ${root}; only files that stay inside are copied: copy the file in, or name its real path`,
      { path: src, realPath: real },
    );
}

/** The real path of a directory (itself, when it does not exist: `collect` says so). */
function realDir(dir: string): string {
  try {
    return realpathSync(dir);
  } catch {
    return resolve(dir);
  }
}

/**
 * Copies the app's `include` paths (relative to `baseDir`, the declaring file's directory) and
 * File/Dir inputs (at `mount`, default `inputs/<name>/...`) into `<filesRoot>/<hash>/`.
 * Undefined when the app has neither.
 */
export function snapshotFiles(
  env: AppEnvironment | JobEnvironment,
  baseDir: string,
  filesRoot: string,
): FilesSnapshot | undefined {
  const files = new Map<string, Uint8Array>();
  const where = `app "${env.name}"`;
  for (const path of env.include) {
    const abs = resolve(baseDir, path);
    const rel = relative(baseDir, abs);
    if (!inside(rel)) {
      throw new CaravanError(
        "VALIDATION",
        `${where}: include ${JSON.stringify(path)} is outside ${baseDir}, the directory of the file that declares it; include paths are relative to that file and stay below it`,
      );
    }
    collect(abs, rel, files, `${where} include ${JSON.stringify(path)}`, realDir(baseDir));
  }
  const inputDest: Record<string, string> = {};
  for (const input of env.inputs) {
    const kind = inputValueKind(input.value);
    if (kind !== "file" && kind !== "dir") continue;
    const src = (input.value as { path: string }).path;
    const dest = normalize(
      input.mount ??
        (kind === "file" ? join("inputs", input.name, basename(src)) : join("inputs", input.name)),
    );
    if (!inside(dest)) {
      throw new CaravanError(
        "INVALID_INPUT",
        `${where} input "${input.name}": mount ${JSON.stringify(input.mount)} must be a relative path inside the app's files (e.g. "data/model.bin")`,
      );
    }
    // The File or Dir stays in its own directory (a link there may not lead out), and a
    // Dir's files inside it.
    if (existsSync(src)) staysIn(realDir(dirname(src)), src, `${where} input "${input.name}"`);
    const root = realDir(kind === "dir" ? src : dirname(src));
    collect(src, dest, files, `${where} input "${input.name}"`, root, kind === "dir");
    inputDest[input.name] = dest;
  }
  if (env.include.length === 0 && Object.keys(inputDest).length === 0) return undefined;
  const list = [...files.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([name, contents]) => ({ name, contents }));
  const { hash, dir } = writeContentAddressed(filesRoot, list);
  mkdirSync(dir, { recursive: true }); // nothing to write (empty directories only)
  const inputs = Object.fromEntries(
    Object.entries(inputDest).map(([name, dest]) => [name, join(dir, dest)]),
  );
  return { hash, dir, inputs };
}
