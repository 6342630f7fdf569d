import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { CaravanError } from "../errors.ts";
import { AppEnvironment } from "../sdk/environment.ts";
import { Dir, File, Input } from "../sdk/inputs.ts";
import { snapshotFiles } from "./files.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A project with a file, a link to a file outside it, and a directory holding such a link. */
function project() {
  const root = mkdtempSync(join(tmpdir(), "caravan-files-"));
  dirs.push(root);
  const proj = join(root, "proj");
  const outside = join(root, "secret.txt");
  writeFileSync(outside, "not yours");
  mkdirSync(join(proj, "static"), { recursive: true });
  mkdirSync(join(proj, "clean"), { recursive: true });
  writeFileSync(join(proj, "ok.txt"), "ok");
  writeFileSync(join(proj, "clean", "a.txt"), "a");
  symlinkSync("../ok.txt", join(proj, "clean", "ok-link.txt")); // a link that stays inside
  symlinkSync("/etc/passwd", join(proj, "passwd"));
  symlinkSync(outside, join(proj, "static", "leak.txt"));
  return { proj, outside, files: join(root, "files") };
}

let n = 0;
const app = (opts: Partial<ConstructorParameters<typeof AppEnvironment>[0]>) =>
  new AppEnvironment({ name: `files-${n++}`, command: ["true"], ...opts });

function errorOf(fn: () => unknown): CaravanError {
  try {
    fn();
  } catch (e) {
    return e as CaravanError;
  }
  throw new Error("expected an error");
}

describe("file snapshots follow no link out of where they copy from", () => {
  it("include: a link to /etc/passwd, or a directory holding a link out, is refused", () => {
    const p = project();
    const link = errorOf(() => snapshotFiles(app({ include: ["passwd"] }), p.proj, p.files));
    expect(link.code).toBe("VALIDATION");
    expect(link.message).toContain("resolves (through a symbolic link) to /etc/passwd");
    expect(link.message).toContain(`outside ${p.proj}`);
    const nested = errorOf(() => snapshotFiles(app({ include: ["static"] }), p.proj, p.files));
    expect(nested.message).toContain(`to ${p.outside}`);
    // Links that stay inside are fine.
    const ok = snapshotFiles(app({ include: ["ok.txt", "clean"] }), p.proj, p.files);
    expect(ok?.hash).toBeTruthy();
  });

  it("File and Dir inputs: a link out of their directory is refused", () => {
    const p = project();
    const file = app({
      inputs: [new Input({ name: "cfg", value: new File(join(p.proj, "passwd")) })],
    });
    expect(errorOf(() => snapshotFiles(file, p.proj, p.files)).message).toContain("to /etc/passwd");
    const dir = app({
      inputs: [new Input({ name: "assets", value: new Dir(join(p.proj, "static")) })],
    });
    expect(errorOf(() => snapshotFiles(dir, p.proj, p.files)).message).toContain(`to ${p.outside}`);
    // A file named by its real path, wherever it is, is the author's choice.
    const named = app({ inputs: [new Input({ name: "s", value: new File(p.outside) })] });
    expect(snapshotFiles(named, p.proj, p.files)?.inputs.s).toBeTruthy();
  });
});
