import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { LogKeeper, tailLines } from "./logs.ts";

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), "caravan-logs-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const line = (n: number) => `line ${String(n).padStart(8, "0")}\n`;

describe("LogKeeper", () => {
  it("rotates a log past its cap as it is written, keeping its last bytes in .1 and no line twice", async () => {
    const file = join(dir, "app.log");
    const cap = 64 * 1024;
    const keeper = new LogKeeper(cap, 1);
    // Like an app: its own O_APPEND descriptor, writing on while the keeper rotates.
    const fd = openSync(file, "a");
    keeper.watch(file);
    let largest = 0;
    let n = 0;
    try {
      for (let batch = 0; batch < 200; batch++) {
        let text = "";
        for (let i = 0; i < 1000; i++) text += line(n++);
        writeSync(fd, text);
        largest = Math.max(largest, statSync(file).size);
        // Let the keeper's watch and checks run, as an app's writes would between two ticks.
        await new Promise((r) => setTimeout(r, 2));
      }
      // Copy-truncate loses what is written between a rotation's last size check and its
      // truncation (logs.ts says so; here a batch can land there while the rotation awaits):
      // the last line is written once the keeper is idle.
      await keeper.check(file);
      writeSync(fd, line(n++));
    } finally {
      closeSync(fd);
    }
    await keeper.check(file);
    expect(keeper.rotation(file).count).toBeGreaterThan(1);
    keeper.close();
    expect(n * line(0).length).toBeGreaterThan(40 * cap); // 2.8 MB written
    // Checked as it grows (the writes and the checks share one event loop here).
    expect(largest).toBeLessThan((n * line(0).length) / 2);
    expect(statSync(file).size).toBeLessThanOrEqual(cap);
    expect(statSync(`${file}.1`).size).toBeLessThan(2 * cap);
    expect(existsSync(`${file}.1.tmp`)).toBe(false);
    // .1 then the file: consecutive lines, the last one written last.
    const kept = (readFileSync(`${file}.1`, "utf8") + readFileSync(file, "utf8"))
      .split("\n")
      .slice(1, -1);
    const numbers = kept.map((l) => Number(l.slice(5)));
    expect(numbers.at(-1)).toBe(n - 1);
    for (let i = 1; i < numbers.length; i++) expect(numbers[i]).toBeGreaterThan(numbers[i - 1]!);
  });

  it("removes a log and its rotated part", async () => {
    const file = join(dir, "app.log");
    writeFileSync(file, "x".repeat(300));
    const keeper = new LogKeeper(100);
    keeper.watch(file);
    await keeper.check(file);
    expect(existsSync(`${file}.1`)).toBe(true);
    await keeper.remove(file);
    expect(existsSync(file)).toBe(false);
    expect(existsSync(`${file}.1`)).toBe(false);
    keeper.close();
  });
});

describe("tailLines", () => {
  it("reads the last n lines from the end of a big file, and nothing for n = 0", async () => {
    const file = join(dir, "big.log");
    let text = "";
    for (let i = 0; i < 200_000; i++) text += line(i); // 3.6 MB
    writeFileSync(file, text + "partial");
    expect(await tailLines(file, 3)).toEqual({
      lines: [line(199_998).trimEnd(), line(199_999).trimEnd(), "partial"],
      end: statSync(file).size,
    });
    expect((await tailLines(file, 0)).lines).toEqual([]);
    // Lines longer than the 4 MiB a plain `logs` shows are still whole when asked for.
    const long = join(dir, "long.log");
    writeFileSync(long, `${"a".repeat(3 << 20)}\n${"b".repeat(3 << 20)}\nlast\n`);
    const two = (await tailLines(long, 3, 16 << 20)).lines;
    expect(two.map((l) => l.length)).toEqual([3 << 20, 3 << 20, 4]);
    // Without n: the whole lines of the last maxBytes.
    expect((await tailLines(file, undefined, 30)).lines).toEqual([
      line(199_999).trimEnd(),
      "partial",
    ]);
  });
});
