/**
 * What importing a user's file needs, set up once and only when a user's file is imported (a
 * command that imports none does not pay for it): TypeScript compiled on the fly (tsx), and
 * `caravan` resolving to this package where the project has no package of that name (the
 * package is published as `caravan-deploy`; `caravan` is how DESIGN's examples import it).
 */
import { extname } from "node:path";

let typescript: Promise<void> | undefined;
let aliased = false;

/** Call before `import()` of a user's file (a project file, or its caravan.config.ts). */
export async function prepareUserImport(path: string): Promise<void> {
  if (!aliased) {
    aliased = true;
    // Run from the sources (tests, scripts through tsx), the hook module is TypeScript too:
    // the loader thread compiles it with the hooks registered before it.
    if (extname(import.meta.url) === ".ts") await compileTypeScript();
    const { register } = await import("node:module");
    register(new URL(`./alias-hooks${extname(import.meta.url)}`, import.meta.url), {
      data: { self: import.meta.url },
    });
  }
  if (/\.[cm]?tsx?$/.test(path)) await compileTypeScript();
}

function compileTypeScript(): Promise<void> {
  typescript ??= import("tsx/esm/api").then(({ register }) => void register());
  return typescript;
}
