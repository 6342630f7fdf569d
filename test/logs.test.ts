/**
 * App logs on disk: a chatty app's log stays near its 10 MiB cap while it writes (the cap
 * is enforced as the log grows, not by a sweep every 30 s), `logs --tail N` gives the last
 * N lines, and `delete` removes the app's logs.
 */
import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { eventually, useSandbox } from "./helpers.ts";
import { deploy, fixture, get } from "./support.ts";

const CHATTY = fixture("logs/chatty.ts");
const MiB = 1024 * 1024;

const sizeOf = (file: string) => (existsSync(file) ? statSync(file).size : 0);

describe("app logs", () => {
  const sb = useSandbox();

  it("keeps a chatty app's log under its cap while it writes; tail reads the end; delete removes the logs", async () => {
    const r = await deploy(sb, [CHATTY]);
    expect(r.code, r.stderr).toBe(0);
    const endpoint = r.by.chatty!.endpoint!;
    const log = join(sb.home, "logs/default/development/chatty.log");

    // Sample the log's size while the app writes 30 times its cap.
    let largest = 0;
    let rotatedLargest = 0;
    const written = await eventually(
      async () => {
        largest = Math.max(largest, sizeOf(log));
        rotatedLargest = Math.max(rotatedLargest, sizeOf(`${log}.1`));
        const { written } = JSON.parse((await get(endpoint)).body) as { written: number };
        return written > 300 * MiB && written;
      },
      120_000,
      10,
    );
    largest = Math.max(largest, sizeOf(log));
    // The cap is 10 MiB; checks follow the writes, so the file overshoots by what the app
    // writes in a moment, not by 30 s of it (the app wrote ~300 MiB by now).
    expect(written).toBeGreaterThan(300 * MiB);
    expect(largest).toBeLessThan(40 * MiB);
    expect(rotatedLargest).toBeGreaterThan(0);
    expect(rotatedLargest).toBeLessThan(16 * MiB);

    // The last lines, from the end of the file.
    const tail = await sb.run(["logs", "chatty", "--tail", "3"]);
    expect(tail.code, tail.stderr).toBe(0);
    const lines = tail.stdout.trimEnd().split("\n");
    expect(lines).toHaveLength(3);
    for (const line of lines) expect(line).toMatch(/^line \d{10} x{100}$/);
    const none = await sb.run(["logs", "chatty", "--tail", "0"]);
    expect(none.code, none.stderr).toBe(0);
    expect(none.stdout).toBe("");

    const del = await sb.run(["delete", "chatty"]);
    expect(del.code, del.stderr).toBe(0);
    expect(existsSync(log)).toBe(false);
    expect(existsSync(`${log}.1`)).toBe(false);
  });
});
