import { existsSync, statSync } from "node:fs";
import { dirname, extname, relative, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { CaravanError, isCaravanError } from "../errors.ts";
import { isEnvironment, type Environment } from "./environment.ts";
import { shared } from "./global.ts";
import { prepareUserImport } from "./user-imports.ts";

/**
 * Imports a user's file (TypeScript through tsx, registered on first use) and returns every
 * environment constructed while it loaded — exported or not, from any copy of caravan.
 */
export async function loadEnvironments(
  file: string,
): Promise<{ file: string; environments: Environment[] }> {
  const path = resolve(file);
  const what = !existsSync(path)
    ? "no such file"
    : statSync(path).isDirectory()
      ? "is a directory, not a file"
      : !statSync(path).isFile()
        ? "is not a regular file"
        : !SOURCE_EXTENSIONS.includes(extname(path))
          ? `is not a TypeScript or JavaScript file (${SOURCE_EXTENSIONS.join(", ")})`
          : undefined;
  if (what) {
    throw new CaravanError(
      "LOAD_FAILED",
      `${file}: ${what}. Give the path of a .ts file that declares environments`,
      { file },
    );
  }
  const registry = shared().environments;
  const before = registry.length;
  try {
    await prepareUserImport(path);
    await import(pathToFileURL(path).href);
  } catch (e) {
    if (isCaravanError(e)) throw e;
    const err = e as Error;
    const at = userFrame(err, path);
    // tsx compiles a .ts file outside an ESM package as CommonJS, which cannot import ESM.
    const hint = /require\(\) ES Module|ERR_REQUIRE_ESM|ERR_REQUIRE_CYCLE_MODULE/.test(
      `${err?.message} ${(err as { code?: string })?.code}`,
    )
      ? `. ${file} is loaded as CommonJS: add "type": "module" to the nearest package.json, or rename it to .mts`
      : "";
    throw new CaravanError(
      "LOAD_FAILED",
      `${at ?? relative(process.cwd(), path)}: ${err?.message ?? String(e)} (thrown while loading ${relative(process.cwd(), path) || path})${hint}`,
      { file: path, at },
    );
  }
  // A file imported before (same module) registers nothing new: fall back to what it declared.
  let found = registry.slice(before).filter(isEnvironment);
  if (found.length === 0)
    found = registry.filter(isEnvironment).filter((e) => e.declaredAt?.file === path);
  if (found.length === 0) {
    throw new CaravanError(
      "NO_ENVIRONMENTS",
      `${file} declares no environment. Construct at least one AppEnvironment or TaskEnvironment in it (exported or not)`,
      { file },
    );
  }
  return { file: path, environments: [...new Set(found)] };
}

/** What `loadEnvironments` imports. */
const SOURCE_EXTENSIONS = [".ts", ".mts", ".cts", ".tsx", ".js", ".mjs", ".cjs"];

/** caravan's own sources: an error is never located there (the user's file is at fault). */
const OWN_SOURCES = resolve(dirname(fileURLToPath(import.meta.url)), "..") + sep;

/**
 * `file:line` of the first stack frame in the user's code (not node internals, node_modules
 * or caravan's own sources, which only imported it); undefined when there is none.
 */
function userFrame(err: Error, entry: string): string | undefined {
  const stack = err?.stack ?? "";
  // Frames look like "at fn (/abs/file.ts:12:7)" or "at file:///abs/file.ts:12:7"; skip node:internal ones.
  const frames = [...stack.matchAll(/(?:\(|at )((?:file:\/\/)?\/[^\s():]+):(\d+):(\d+)/g)].map(
    (m) => {
      const f = m[1]!.startsWith("file://") ? fileURLToPath(m[1]!) : m[1]!;
      return { file: f, line: m[2]! };
    },
  );
  const user =
    frames.find((f) => f.file === entry) ??
    frames.find((f) => !f.file.includes("/node_modules/") && !f.file.startsWith(OWN_SOURCES));
  return user ? `${relative(process.cwd(), user.file) || user.file}:${user.line}` : undefined;
}

/** Picks environments by name, or all of them. */
export function selectEnvironments(all: Environment[], names: string[]): Environment[] {
  if (names.length === 0) return all;
  const byName = new Map(all.map((e) => [e.name, e]));
  return names.map((n) => {
    const env = byName.get(n);
    if (!env) {
      throw new CaravanError(
        "UNKNOWN_ENVIRONMENT",
        `no environment named "${n}" in this file; it declares: ${[...byName.keys()].sort().join(", ")}`,
        { name: n },
      );
    }
    return env;
  });
}
