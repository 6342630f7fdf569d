/**
 * The CLI's entry as one file (`npm run build` runs this after tsc): `dist/cli/entry.js`, which
 * bin/caravan.js runs. Node pays about half a millisecond for each ES module it loads (resolve,
 * read, link): `caravan status` loaded some twenty of caravan's own, a tenth of its start-up.
 *
 * The bundle holds `cli/main.js` and the modules its static imports reach, and, initialised
 * only when first imported, what a run of a command declared as data (cli/direct.ts) imports on
 * its way: DIRECT_PATH and their static imports. Every other module stays where tsc wrote it
 * and is imported from there, so a command still loads only what it uses. Not inlined either:
 * a module that imports a package (its imports would be hoisted to the bundle's top and load
 * for every command) and one that uses `import.meta` other than `.url`. In an inlined module,
 * `import.meta.url` is rewritten to the URL of its own file in dist/, so paths computed from it
 * (bin/caravan.js, the package's files) stay what they were. A module may so be loaded twice in
 * one process (once inlined, once from its file): caravan's modules allow that (identity by
 * brands and `Symbol.for` state, see sdk/global.ts; errors recognised by name and code).
 */
import { build } from "esbuild";
import { readFileSync } from "node:fs";
import { dirname, relative, resolve } from "node:path";

const DIST = resolve(import.meta.dirname, "../dist");
const ENTRY = resolve(DIST, "cli/main.js");
const OUT = resolve(DIST, "cli/entry.js");

/**
 * What a direct `caravan status` imports dynamically, relative to dist/ (see `declared` in
 * cli/main.ts): the command and the parser, the config, the backend registry and the local
 * backend's client, the health derivation. A module missing here still works, from its file.
 */
const DIRECT_PATH = [
  "cli/commands/status.js",
  "cli/direct.js",
  "sdk/config.js",
  "backends/registry.js",
  "backends/local/index.js",
  "backends/health.js",
].map((file) => resolve(DIST, file));

/** `./x.js` from the bundle's directory to a file in dist/. */
function fromBundle(file) {
  const path = relative(dirname(OUT), file);
  return path.startsWith(".") ? path : `./${path}`;
}

/** Whether a module can be inlined: no package among its static imports, no other import.meta. */
function inlinable(file) {
  const source = readFileSync(file, "utf8");
  const staticImports = [...source.matchAll(/^(?:import|export)\s[^;]*?from\s+"([^"]+)"/gm)];
  return (
    staticImports.every(([, spec]) => spec.startsWith(".") || spec.startsWith("node:")) &&
    !/import\.meta\.(?!url\b)/.test(source)
  );
}

const result = await build({
  entryPoints: [ENTRY],
  bundle: true,
  format: "esm",
  platform: "node",
  target: "node20",
  packages: "external",
  outfile: OUT,
  sourcemap: true,
  metafile: true,
  logLevel: "warning",
  plugins: [
    {
      name: "caravan-cli-entry",
      setup(b) {
        b.onResolve({ filter: /^\.\.?\// }, (args) => {
          if (args.kind === "entry-point") return undefined;
          const file = resolve(args.resolveDir, args.path);
          const onPath = args.kind === "import-statement" || DIRECT_PATH.includes(file);
          if (onPath && inlinable(file)) return { path: file };
          return { path: fromBundle(file), external: true };
        });
        b.onLoad({ filter: /\.js$/ }, (args) => ({
          contents: readFileSync(args.path, "utf8").replaceAll(
            "import.meta.url",
            `new URL(${JSON.stringify(fromBundle(args.path))}, import.meta.url).href`,
          ),
          loader: "js",
        }));
      },
    },
  ],
});

// What the bundle imports at its top loads for every command: node's builtins only (those of
// the modules inlined on the direct path, which it loads anyway). A module there would mean an
// inlined module imports, statically, one that could not be inlined.
const output = Object.entries(result.metafile.outputs).find(([file]) =>
  file.endsWith("cli/entry.js"),
);
const eager = (output?.[1].imports ?? []).filter(
  (i) => i.kind === "import-statement" && !i.path.startsWith("node:"),
);
if (eager.length) {
  throw new Error(
    `dist/cli/entry.js would load ${eager.map((i) => i.path).join(", ")} for every command: a module on the CLI's entry path imports it statically and it cannot be inlined (it imports a package, or uses import.meta beyond .url); import it dynamically where it is used`,
  );
}
