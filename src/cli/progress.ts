import type { EngineEvent } from "../engine/engine.ts";
import { color } from "./output.ts";
import { headline } from "../errors.ts";

/** Times are this reporter's own clock (ms), taken when events arrive. */
type Row = { name: string; state: string; detail: string; startedAt?: number; finishedAt?: number };

const SYMBOL: Record<string, string> = {
  waiting: color.dim("…"),
  starting: color.cyan("▸"),
  ready: color.green("✓"),
  unchanged: color.green("="),
  failed: color.red("✗"),
  skipped: color.yellow("-"),
};

/**
 * Renders engine events on stderr: a live table on a TTY (redrawn in place, with times),
 * plain lines otherwise (logs and CI).
 */
export function progressReporter(stream: NodeJS.WriteStream = process.stderr) {
  // Rows appear with their first event: the engine reports every environment at the start.
  const rows = new Map<string, Row>();
  const live = stream.isTTY === true && !process.env.CI;
  let width = 4;
  let drawn = 0;

  const line = (r: Row) => {
    const ms = r.startedAt === undefined ? "" : `${(r.finishedAt ?? Date.now()) - r.startedAt} ms`;
    return `${SYMBOL[r.state] ?? " "} ${r.name.padEnd(width)}  ${r.state.padEnd(9)} ${color.dim(ms.padStart(8))} ${r.detail}`;
  };
  const redraw = () => {
    if (drawn) stream.write(`\x1b[${drawn}A`);
    for (const r of rows.values()) stream.write(`\x1b[2K${line(r).split("\n")[0]}\n`);
    drawn = rows.size;
  };
  const timer = live ? setInterval(redraw, 100) : undefined;
  timer?.unref();

  return {
    onEvent(event: EngineEvent) {
      const name = event.type === "done" ? event.outcome.name : event.name;
      let row = rows.get(name);
      if (!row) {
        rows.set(name, (row = { name, state: "waiting", detail: "" }));
        width = Math.max(width, name.length);
      }
      if (event.type === "waiting") row.detail = color.dim(`waits for ${event.on.join(", ")}`);
      if (event.type === "starting")
        Object.assign(row, { state: "starting", startedAt: Date.now(), detail: "" });
      if (event.type === "done") {
        const o = event.outcome;
        Object.assign(row, {
          state: o.status,
          finishedAt: Date.now(),
          detail: o.endpoint ?? (o.error ? color.red(headline(o.error)) : ""),
        });
      }
      if (live) redraw();
      else if (event.type === "done") stream.write(line(row) + "\n");
    },
    done() {
      if (timer) clearInterval(timer);
      if (live) redraw();
    },
  };
}
