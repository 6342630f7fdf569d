/**
 * A module resolution hook (registered by the loader): `caravan-deploy` and `caravan` (with an
 * `/<entry>`) resolve to the package the CLI runs from when nothing of that name is installed
 * where the importing file is — so a file outside any project, or written as DESIGN shows it
 * (`import … from "caravan"`), loads; a project that installed its own keeps it.
 */
interface ResolveContext {
  parentURL?: string;
  conditions: string[];
}
type NextResolve = (specifier: string, context?: ResolveContext) => Promise<unknown>;

let self = "";

export function initialize(data: { self: string }): void {
  self = data.self;
}

export async function resolve(
  specifier: string,
  context: ResolveContext,
  next: NextResolve,
): Promise<unknown> {
  const alias = /^caravan(?:-deploy)?(\/[a-z]+)?$/.exec(specifier);
  if (!alias) return next(specifier, context);
  try {
    return await next(specifier, context);
  } catch (e) {
    if ((e as { code?: string }).code !== "ERR_MODULE_NOT_FOUND") throw e;
    // Resolved from inside this package: its own name finds it (package self-reference).
    return next(`caravan-deploy${alias[1] ?? ""}`, { ...context, parentURL: self });
  }
}
