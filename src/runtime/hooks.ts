/**
 * Module resolution hooks for app processes (registered with `module.register`).
 * - `caravan` and `caravan/*` resolve to the runtime's own copy, so the app and the runtime
 *   share one SDK (one registry, one runtime context).
 * - Bare imports from the snapshot resolve from the user's project (its node_modules), since
 *   the snapshot lives under `$CARAVAN_HOME`, away from them.
 * - Bare imports from the runtime's own files resolve from caravan's package.
 */
interface HookData {
  entries: Record<string, string>;
  runtimeDir: string;
  caravanRoot: string;
  bundleDir: string;
  sourceRoot: string;
}

let data: HookData;

export function initialize(d: HookData): void {
  data = d;
}

type Resolve = (specifier: string, context: { parentURL?: string }) => Promise<unknown>;

function isBare(specifier: string): boolean {
  return !/^(\.{0,2}\/|[a-z][a-z0-9+.-]*:)/i.test(specifier);
}

export async function resolve(
  specifier: string,
  context: { parentURL?: string },
  next: Resolve,
): Promise<unknown> {
  const entry = data.entries[specifier];
  if (entry) return { url: entry, shortCircuit: true };
  const parent = context.parentURL;
  if (parent && isBare(specifier)) {
    if (parent.startsWith(data.bundleDir))
      return next(specifier, { ...context, parentURL: data.sourceRoot });
    if (parent.startsWith(data.runtimeDir))
      return next(specifier, { ...context, parentURL: data.caravanRoot });
  }
  return next(specifier, context);
}
