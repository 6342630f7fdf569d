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
}

/**
 * The caller's site, found when first asked. Capturing a stack is cheap; formatting it (through
 * source maps under tsx) is not, and most declarations are never asked where they are: a
 * 20,000-environment `caravan plan` spent a third of its time here when it was eager.
 */
export function lazyCallerSite(): () => Site | undefined {
  const capture = new Error();
  let site: Site | undefined | null = null;
  return () => (site === null ? (site = siteOf(capture.stack ?? "")) : site);
}

function siteOf(stack: string): Site | undefined {
  for (const raw of stack.split("\n").slice(1)) {
    const m = /\(?((?:file:\/\/)?\/[^():]+):(\d+):\d+\)?\s*$/.exec(raw.trim());
    if (!m) continue;
    const file = m[1]!.startsWith("file://") ? fileURLToPath(m[1]!) : m[1]!;
    // SDK modules are skipped; files beside them that are not the SDK (its tests) are callers.
    if (SDK_DIRS.some((d) => file.startsWith(d)) && !/\.test(-d)?\.[cm]?[jt]s$/.test(file))
      continue;
    if (file.includes("/node_modules/") && !file.includes("/node_modules/.caravan")) continue;
    return { file, line: Number(m[2]) };
  }
  return undefined;
}

export function formatSite(site: Site | undefined): string {
  return site ? `${site.file}:${site.line}` : "(unknown location)";
}
