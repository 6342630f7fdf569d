import { fileURLToPath } from "node:url";
import { dirname, sep } from "node:path";

const SDK_DIR = dirname(fileURLToPath(import.meta.url));
/**
 * The SDK's directories: where it runs from, and (in the compiled package) its sources, which
 * frames point at once source maps are applied (tsx and --enable-source-maps apply them).
 */
const SDK_DIRS = [SDK_DIR, SDK_DIR.replace(/([/\\])dist([/\\])sdk$/, "$1src$2sdk")].map(
  (d) => d + sep,
);

/** Where a declaration happened: the first stack frame outside caravan's SDK. */
export interface Site {
  file: string;
  line: number;
  /**
   * Whether every frame of the user's code between here and the evaluation of a module (node's
   * module loader) is in `file`: evaluating that module (and what it imports) is then what
   * declares the environment. Not so when a function of another module declared it (a factory
   * the entry file calls), nor when no module evaluation is on the stack (after an `await`).
   */
  byItsModule: boolean;
}

/** Frames captured per declaration: enough to reach the module loader's but in rare stacks. */
const STACK_FRAMES = 32;

/**
 * The caller's site, found when first asked. Capturing a stack is cheap; formatting it (through
 * source maps under tsx) is not, and most declarations are never asked where they are: a
 * 20,000-environment `caravan plan` spent a third of its time here when it was eager.
 */
export function lazyCallerSite(): () => Site | undefined {
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = STACK_FRAMES;
  const capture = new Error();
  Error.stackTraceLimit = limit;
  let site: Site | undefined | null = null;
  return () => (site === null ? (site = siteOf(capture.stack ?? "")) : site);
}

function siteOf(stack: string): Site | undefined {
  let first: { file: string; line: number } | undefined;
  // Frames past the first of node's module loader are whoever imported the module: they do
  // not decide what evaluating it declares.
  let pastLoader = false;
  let byItsModule = false;
  for (const raw of stack.split("\n").slice(1)) {
    if (!pastLoader && raw.includes("node:internal/modules/")) {
      pastLoader = true;
      byItsModule = first !== undefined;
      if (first) break;
    }
    // A path starts the location (after "(" or "at "): node's own `node:internal/…` never does.
    const m = /(?:^at (?:async )?|\()((?:file:\/\/)?\/[^():]+):(\d+):\d+\)?\s*$/.exec(raw.trim());
    if (!m) continue;
    const file = m[1]!.startsWith("file://") ? fileURLToPath(m[1]!) : m[1]!;
    // SDK modules are skipped; files beside them that are not the SDK (its tests) are callers.
    if (SDK_DIRS.some((d) => file.startsWith(d)) && !/\.test(-d)?\.[cm]?[jt]s$/.test(file))
      continue;
    if (file.includes("/node_modules/") && !file.includes("/node_modules/.caravan")) continue;
    if (!first) first = { file, line: Number(m[2]) };
    else if (file !== first.file && !pastLoader) return { ...first, byItsModule: false };
    // Past the loader, the first user frame is still where it was declared (a package's
    // module that declares one is imported from there), but no module of the user's did.
    if (pastLoader) break;
  }
  return first && { ...first, byItsModule };
}

export function formatSite(site: Site | undefined): string {
  return site ? `${site.file}:${site.line}` : "(unknown location)";
}
