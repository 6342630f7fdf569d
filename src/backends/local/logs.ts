/**
 * App logs on disk. An app writes its stdout/stderr straight into its log file through a
 * descriptor of its own (O_APPEND), so it outlives the control plane and never blocks on a
 * pipe. The control plane keeps each file near its cap without being in the write path: a
 * watch on the file (inotify) wakes a size check at most every `checkEveryMs` while the app
 * writes, and a file past the cap is rotated at once: its last `maxBytes` are streamed into
 * `<file>.1` and the file is truncated (the app's O_APPEND writes go on at the new end).
 * What the app writes in the instant between the last size check and the truncation is
 * lost (copy-truncate: the app's descriptor cannot be moved to a new file).
 *
 * Nothing here reads or copies a log synchronously: the daemon's event loop (and with it
 * the gateway) never waits on a log file.
 */
import { watch, type FSWatcher } from "node:fs";
import { open, rename, rm, stat, truncate } from "node:fs/promises";
import type { LogsOptions } from "../contract.ts";

/** An app's log file is rotated once it passes this size. */
export const MAX_LOG_BYTES = 10 * 1024 * 1024;
/** While an app writes, its log's size is checked at most this often. */
const CHECK_EVERY_MS = 50;
const CHUNK = 1024 * 1024;

interface Watched {
  watcher?: FSWatcher;
  /** A check is scheduled or running. */
  pending: boolean;
  /** The check running now (one at a time per file). */
  running?: Promise<void>;
  /** The file changed while a check ran: check again after it. */
  dirty: boolean;
  lastCheck: number;
  /** Rotations so far, and the offset (in the file before its last rotation) `.1` begins at. */
  rotations: number;
  base: number;
}

export class LogKeeper {
  private readonly files = new Map<string, Watched>();
  private closed = false;

  constructor(
    private readonly maxBytes = MAX_LOG_BYTES,
    private readonly checkEveryMs = CHECK_EVERY_MS,
  ) {}

  /**
   * Keeps `file` under the cap from now on (idempotent; a file that does not exist yet is
   * watched once `watch` is called again after it does: the control plane calls it on every
   * spawn and sweep).
   */
  watch(file: string): void {
    if (this.closed) return;
    let w = this.files.get(file);
    if (!w) {
      w = { pending: false, dirty: false, lastCheck: 0, rotations: 0, base: 0 };
      this.files.set(file, w);
    }
    if (!w.watcher) {
      try {
        const watcher = watch(file, { persistent: false }, () => this.wake(file));
        watcher.on("error", () => {
          watcher.close();
          if (w.watcher === watcher) delete w.watcher;
        });
        w.watcher = watcher;
      } catch {
        /* no file yet: the next watch() arms it */
      }
    }
    this.wake(file);
  }

  /** How often `file` was rotated, and where `<file>.1` begins in its old offsets. */
  rotation(file: string): { count: number; base: number } {
    const w = this.files.get(file);
    return { count: w?.rotations ?? 0, base: w?.base ?? 0 };
  }

  /** Checks `file` now (rotating it when past the cap); resolves when done. */
  async check(file: string): Promise<void> {
    const w = this.files.get(file);
    if (!w) return;
    if (w.running) {
      await w.running;
      return this.check(file);
    }
    w.pending = true;
    w.dirty = false;
    w.running = (async () => {
      try {
        const { size } = await stat(file);
        if (size > this.maxBytes) await this.rotate(file, w, size);
      } catch {
        /* gone, or unreadable: nothing to keep small */
      } finally {
        w.lastCheck = Date.now();
        w.pending = false;
        w.running = undefined;
      }
    })();
    await w.running;
    if (w.dirty) this.wake(file);
  }

  /** Stops keeping `file` and removes it and its rotated part (an app's `delete`). */
  async remove(file: string): Promise<void> {
    this.forget(file);
    await Promise.all(
      [file, `${file}.1`, `${file}.1.tmp`].map((f) => rm(f, { force: true }).catch(() => {})),
    );
  }

  forget(file: string): void {
    this.files.get(file)?.watcher?.close();
    this.files.delete(file);
  }

  close(): void {
    this.closed = true;
    for (const file of [...this.files.keys()]) this.forget(file);
  }

  private wake(file: string): void {
    const w = this.files.get(file);
    if (!w || this.closed) return;
    if (w.pending) {
      w.dirty = true;
      return;
    }
    w.pending = true;
    const delay = Math.max(0, w.lastCheck + this.checkEveryMs - Date.now());
    setTimeout(() => void this.check(file), delay).unref();
  }

  /**
   * Streams the last `maxBytes` (and what the app writes meanwhile, a few rounds) into
   * `<file>.1.tmp`, truncates the file, then renames the copy to `<file>.1`.
   */
  private async rotate(file: string, w: Watched, size: number): Promise<void> {
    const tmp = `${file}.1.tmp`;
    const start = Math.max(0, size - this.maxBytes);
    const src = await open(file, "r");
    const out = await open(tmp, "w");
    try {
      const buf = Buffer.allocUnsafe(CHUNK);
      let pos = start;
      // `.1` keeps at most 1.5 times the cap.
      const limit = start + Math.floor(this.maxBytes * 1.5);
      // Copy up to the end, again while the app wrote more meanwhile: the file is truncated
      // right after a size check found nothing new (or, behind an app that writes faster
      // than this copies, after a few rounds or once `.1` is full, dropping the rest).
      for (let round = 0; ; round++) {
        const end = (await src.stat()).size;
        if (end < pos) break; // truncated by someone else meanwhile
        if (end === pos || round >= 8 || end >= limit) {
          if (end > pos) await copy(src, out, buf, pos, Math.min(end, limit));
          await truncate(file, 0);
          break;
        }
        pos = await copy(src, out, buf, pos, end);
      }
    } finally {
      await src.close();
      await out.close();
    }
    await rename(tmp, `${file}.1`);
    w.rotations++;
    w.base = start;
  }
}

async function copy(
  src: import("node:fs/promises").FileHandle,
  out: import("node:fs/promises").FileHandle,
  buf: Buffer,
  from: number,
  to: number,
): Promise<number> {
  let pos = from;
  while (pos < to) {
    const { bytesRead } = await src.read(buf, 0, Math.min(buf.length, to - pos), pos);
    if (!bytesRead) break;
    await out.write(buf, 0, bytesRead);
    pos += bytesRead;
  }
  return pos;
}

/** Bytes `start` to `end` of a file, as UTF-8 (read without blocking the event loop). */
export async function readSlice(file: string, start: number, end: number): Promise<string> {
  const fh = await open(file, "r");
  try {
    const buf = Buffer.alloc(Math.max(0, end - start));
    let got = 0;
    while (got < buf.length) {
      const { bytesRead } = await fh.read(buf, got, buf.length - got, start + got);
      if (!bytesRead) break;
      got += bytesRead;
    }
    return buf.subarray(0, got).toString("utf8");
  } finally {
    await fh.close();
  }
}

/**
 * The last `n` lines of a file (all of its last `maxBytes` when `n` is undefined), read
 * backwards from its end in chunks until there are enough: `logs --tail 5` of a big log
 * reads a few KiB, never the whole file. `end` is the size the lines were read up to.
 */
export async function tailLines(
  file: string,
  n: number | undefined,
  maxBytes = 4 * 1024 * 1024,
): Promise<{ lines: string[]; end: number }> {
  // A read that comes up short means the file shrank meanwhile (the cap emptied it): what was
  // read would join two different places of the log, so read its new end instead.
  for (let attempt = 1; ; attempt++) {
    const got = await tailOnce(file, n, maxBytes);
    if (got || attempt === 3) return got ?? { lines: [], end: 0 };
  }
}

async function tailOnce(
  file: string,
  n: number | undefined,
  maxBytes: number,
): Promise<{ lines: string[]; end: number } | undefined> {
  const fh = await open(file, "r");
  try {
    const end = (await fh.stat()).size;
    if (n === 0) return { lines: [], end };
    const floor = Math.max(0, end - maxBytes);
    const chunks: Buffer[] = [];
    let start = end;
    let newlines = 0;
    // n lines need n + 1 newlines before them (the last line ends with one).
    while (start > floor && (n === undefined || newlines <= n)) {
      const from = Math.max(floor, start - 64 * 1024);
      const buf = Buffer.alloc(start - from);
      const { bytesRead } = await fh.read(buf, 0, buf.length, from);
      if (bytesRead < buf.length) return undefined;
      const chunk = buf;
      for (const byte of chunk) if (byte === 10) newlines++;
      chunks.unshift(chunk);
      start = from;
    }
    const lines = Buffer.concat(chunks).toString("utf8").split("\n");
    if (start > 0) lines.shift(); // began mid-line
    if (lines.at(-1) === "") lines.pop();
    return { lines: n === undefined ? lines : lines.slice(-n), end };
  } finally {
    await fh.close();
  }
}

/**
 * An app's log as lines: the last `tail` (all without it), read backwards from the end and
 * from `.1` when just rotated; with `follow`, then what is written, across rotations, until
 * `signal` aborts.
 */
export async function* readLog(
  file: string,
  keeper: LogKeeper,
  opts: LogsOptions = {},
): AsyncIterable<string> {
  let offset = 0;
  // Read backwards from the end, never the whole file, and never synchronously.
  const first = await tailLines(file, opts.tail).catch(() => undefined);
  let lines = first?.lines ?? [];
  // Just rotated (or a short log): the lines before are at the end of `.1`.
  if (opts.tail === undefined || lines.length < opts.tail) {
    const rest = opts.tail === undefined ? undefined : opts.tail - lines.length;
    const older = await tailLines(`${file}.1`, rest).catch(() => undefined);
    if (older) lines = [...older.lines, ...lines];
  }
  for (const line of lines) yield line;
  if (first) offset = first.end;
  let partial = "";
  let rotations = keeper.rotation(file).count;
  // A follower reads at most this much per poll: behind a chatty app, it skips ahead.
  const perPoll = 4 * 1024 * 1024;
  while (opts.follow && !opts.signal?.aborted) {
    await new Promise((r) => setTimeout(r, 200));
    let rotated = "";
    const rotation = keeper.rotation(file);
    if (rotation.count !== rotations) {
      // Rotated since the last poll: the rest of what we had not read is in `.1`, which
      // begins at `base` of the old file.
      rotations = rotation.count;
      try {
        const kept = (await stat(`${file}.1`)).size;
        const from = Math.max(0, offset - rotation.base, kept - perPoll);
        rotated = await readSlice(`${file}.1`, from, kept);
      } catch {
        /* rotated again meanwhile: that part is gone */
      }
      offset = 0;
    }
    let size: number;
    try {
      size = (await stat(file)).size;
    } catch {
      continue; // no log (yet)
    }
    if (size < offset) offset = 0;
    if (size === offset && !rotated) continue;
    if (size - offset > perPoll) {
      offset = size - perPoll;
      partial = "";
    }
    const chunk = partial + rotated + (await readSlice(file, offset, size));
    offset = size;
    const lines = chunk.split("\n");
    partial = lines.pop() ?? "";
    for (const line of lines) yield line;
  }
}
