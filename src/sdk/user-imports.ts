/**
 * What importing a user's file needs, set up once and only when a user's file is imported (a
 * command that imports none does not pay for it): TypeScript compiled on the fly (tsx), and
 * `caravan` resolving to this package where the project has no package of that name (the
 * package is published as `caravan-deploy`; `caravan` is how DESIGN's examples import it).
 */
import { extname } from "node:path";
import { fileURLToPath } from "node:url";
import type { MessagePort } from "node:worker_threads";

let typescript: Promise<void> | undefined;
let aliased = false;
/** The files loaded through the hooks so far (outside node_modules), as the hooks tell them. */
const loaded = new Set<string>();
let loads: MessagePort | undefined;

/** Call before `import()` of a user's file (a project file, or its caravan.config.ts). */
export async function prepareUserImport(path: string): Promise<void> {
  if (!aliased) {
    aliased = true;
    // Run from the sources (tests, scripts through tsx), the hook module is TypeScript too:
    // the loader thread compiles it with the hooks registered before it.
    if (extname(import.meta.url) === ".ts") await compileTypeScript();
    const [{ register }, { MessageChannel }] = await Promise.all([
      import("node:module"),
      import("node:worker_threads"),
    ]);
    const channel = new MessageChannel();
    loads = channel.port1;
    loads.on("message", (m: { url?: string }) => {
      try {
        if (m.url) loaded.add(fileURLToPath(m.url));
      } catch {
        // a file: URL with a host: not a file here
      }
    });
    loads.unref(); // listening keeps no process alive
    register(new URL(`./alias-hooks${extname(import.meta.url)}`, import.meta.url), {
      data: { self: import.meta.url, loads: channel.port2 },
      transferList: [channel.port2],
    });
  }
  if (/\.[cm]?tsx?$/.test(path)) await compileTypeScript();
}

function compileTypeScript(): Promise<void> {
  typescript ??= import("tsx/esm/api").then(({ register }) => void register());
  return typescript;
}

/** How long the hooks' thread gets to confirm it told every load (it answers in microseconds). */
const FLUSH_TIMEOUT_MS = 2_000;

/**
 * Every file the user's ESM imports loaded (or looked for and did not find) so far, outside
 * node_modules (caravan's own included), once the hooks have told all of them: the imports
 * esbuild's listing cannot follow (a computed `import()`, a config file's own imports) are
 * among them. Undefined when the hooks' thread does not confirm in time: not all are known.
 */
export async function userModulesLoaded(): Promise<string[] | undefined> {
  const port = loads;
  if (!port) return [];
  const flush = Math.random();
  const told = await new Promise<boolean>((resolve) => {
    const finish = (ok: boolean) => {
      clearTimeout(timer);
      port.off("message", done);
      port.unref();
      resolve(ok);
    };
    const done = (m: { flushed?: number }) => m.flushed === flush && finish(true);
    const timer = setTimeout(() => finish(false), FLUSH_TIMEOUT_MS);
    port.on("message", done);
    port.ref(); // until the answer is in
    port.postMessage(flush);
  });
  return told ? [...loaded] : undefined;
}
