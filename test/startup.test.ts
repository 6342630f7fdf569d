/**
 * What the CLI loads to start: a run of `caravan status` is one file of caravan's own
 * (dist/cli/entry.js, bundled by scripts/bundle-cli.mjs) and no commander; node pays about half
 * a millisecond per ES module, and status loaded some twenty.
 */
import { readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { describe, expect, it } from "vitest";
import { ROOT, useSandbox } from "./helpers.ts";

const RECORDER = pathToFileURL(join(ROOT, "test/fixtures/startup/record-modules.mjs")).href;

describe("the CLI's start-up", () => {
  const sb = useSandbox();

  /** The files of this checkout (outside the recorder) that `caravan <args>` loaded. */
  const loaded = async (args: string[]) => {
    const file = join(sb.home, "modules.txt");
    rmSync(file, { force: true });
    const r = await sb.run(args, {
      env: { NODE_OPTIONS: `--import=${RECORDER}`, MODULES_FILE: file },
    });
    expect(r.code, r.stderr).toBe(0);
    const root = pathToFileURL(ROOT).href;
    return readFileSync(file, "utf8")
      .split("\n")
      .filter((url) => url.startsWith(root) && !url.includes("/test/fixtures/startup/"))
      .map((url) => url.slice(root.length + 1));
  };

  it("runs status from one file of its own, without commander", async () => {
    const started = await sb.run(["server", "start"]);
    expect(started.code, started.stderr).toBe(0);
    expect(await loaded(["status"])).toEqual(["bin/caravan.js", "dist/cli/entry.js"]);
    // What does not run directly loads the rest from dist/, commander with it.
    const help = await loaded(["status", "--help"]);
    expect(help).toContain("dist/cli/program.js");
    expect(help.some((file) => file.startsWith("node_modules/commander/"))).toBe(true);
  });
});
