/**
 * Module hooks (registered by the loader, user-imports.ts). Resolution: `caravan-deploy` and
 * `caravan` (with an `/<entry>`) resolve to the package the CLI runs from when nothing of that
 * name is installed where the importing file is — so a file outside any project, or written as
 * DESIGN shows it (`import … from "caravan"`), loads; a project that installed its own keeps
 * it. Loading: each file the ESM loader loads outside node_modules (or looks for in vain) is
 * told to the main thread, which records what a plan was computed from (an import esbuild
 * cannot follow, a config's own imports). CommonJS `require` does not pass through here.
 */
import type { MessagePort } from "node:worker_threads";

interface ResolveContext {
  parentURL?: string;
  conditions: string[];
}
type NextResolve = (specifier: string, context?: ResolveContext) => Promise<unknown>;
type NextLoad = (url: string, context?: unknown) => Promise<unknown>;

let self = "";
let loads: MessagePort | undefined;

export function initialize(data: { self: string; loads: MessagePort }): void {
  self = data.self;
  loads = data.loads;
  // Answered in order after every load told before it: the main thread's "all told".
  loads.on("message", (flush: number) => loads!.postMessage({ flushed: flush }));
}

export async function load(url: string, context: unknown, next: NextLoad): Promise<unknown> {
  if (url.startsWith("file:") && !url.includes("/node_modules/")) loads?.postMessage({ url });
  return next(url, context);
}

export async function resolve(
  specifier: string,
  context: ResolveContext,
  next: NextResolve,
): Promise<unknown> {
  const alias = /^caravan(?:-deploy)?(\/[a-z]+)?$/.exec(specifier);
  if (!alias) return next(specifier, context).catch((e: unknown) => missing(e, specifier, context));
  try {
    return await next(specifier, context);
  } catch (e) {
    if ((e as { code?: string }).code !== "ERR_MODULE_NOT_FOUND") throw e;
    // Resolved from inside this package: its own name finds it (package self-reference).
    return next(`caravan-deploy${alias[1] ?? ""}`, { ...context, parentURL: self });
  }
}

/**
 * A file a relative (or file:) import looked for and did not find is told too, and rethrown:
 * code that catches the failure (optional overrides) depends on the file's absence.
 */
function missing(e: unknown, specifier: string, context: ResolveContext): never {
  const code = (e as { code?: string }).code;
  if (code === "ERR_MODULE_NOT_FOUND" && /^(\.{1,2}\/|\/|file:)/.test(specifier)) {
    try {
      const url = new URL(specifier, context.parentURL).href;
      if (url.startsWith("file:") && !url.includes("/node_modules/")) loads?.postMessage({ url });
    } catch {
      // not a URL: nothing to tell
    }
  }
  throw e;
}
