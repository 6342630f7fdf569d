import type { Command } from "commander";
import { openBackend } from "../../api.ts";
import type { SpanView, TraceAccess } from "../../backends/contract.ts";
import type { ResolvedConfig } from "../../sdk/config.ts";
import type { CommandContext } from "../main.ts";
import { color, info, printJSON, printTable, wholeNumber } from "../output.ts";
import { loadScope, scopeOptions, type ScopeFlags } from "../project.ts";

/** Runs `fn` with the configured backend's traces; UNSUPPORTED when it keeps none. */
async function withTraces<T>(
  flags: ScopeFlags,
  fn: (traces: TraceAccess, config: ResolvedConfig) => Promise<T>,
): Promise<T> {
  const config = await loadScope(flags);
  const backend = await openBackend(config);
  try {
    if (!backend.traces) {
      const { unsupported } = await import("../../backends/registry.ts");
      throw unsupported(
        config.backend,
        "caravan traces",
        "its apps report to the OpenTelemetry collector set in kubernetes.otlpEndpoint",
      );
    }
    return await fn(backend.traces, config);
  } finally {
    await backend.close();
  }
}

const ms = (v: number) => (v < 10 ? `${v.toFixed(2)}ms` : `${Math.round(v)}ms`);

export function registerTraces(program: Command, _ctx: CommandContext): void {
  const traces = scopeOptions(
    program
      .command("traces")
      .description(
        "Recent traces the apps reported (newest first): trace id, root span, apps, duration, status, start",
      )
      .option("--app <app>", "only traces with a span from this app")
      .option("--limit <n>", "at most this many", wholeNumber("--limit", 1), 50)
      .option("--all", "every project and domain, not just the current one")
      .option("--json", "print JSON on stdout"),
  ).action(
    async (opts: ScopeFlags & { app?: string; limit: number; all?: boolean; json?: boolean }) => {
      const result = await withTraces(opts, (t, config) =>
        t.list({
          ...(opts.app ? { app: opts.app } : {}),
          ...(opts.all ? {} : { project: config.project, domain: config.domain }),
          limit: opts.limit,
        }),
      );
      if (opts.json) return printJSON(result);
      if (!result.traces.length) info("no traces yet (JS apps are traced by caravan's runtime)");
      else
        printTable(
          ["TRACE", "ROOT", "APPS", "DURATION", "STATUS", "START"],
          result.traces.map((t) => [
            t.traceId,
            t.root,
            t.apps.join(","),
            ms(t.durationMs),
            t.status === "error" ? color.red("error") : "ok",
            new Date(t.startMs).toISOString(),
          ]),
        );
      const dropped = result.telemetry.spans.dropped;
      if (dropped) info(`the receiver was busy and dropped ${dropped} spans since it started`);
    },
  );
  scopeOptions(
    traces
      .command("show <trace-id>")
      .description(
        "One trace as a waterfall: spans indented under their parent, with app and duration",
      )
      .option("--json", "print JSON on stdout"),
  ).action(async (traceId: string, opts: ScopeFlags & { json?: boolean }, cmd: Command) => {
    const trace = await withTraces(opts, (t) => t.get(traceId));
    // `--json` after `show` may be taken by `traces` itself (commander's global options).
    if (opts.json || cmd.optsWithGlobals().json) return printJSON(trace);
    process.stdout.write(waterfall(trace.spans));
  });
}

/**
 * Spans in tree order (a child under its parent, siblings by start), each line: the span
 * indented by depth, its app, offset from the trace's start, duration, and a bar on a
 * 40-column time scale.
 */
export function waterfall(spans: SpanView[], width = 40): string {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string | null, SpanView[]>();
  for (const s of spans) {
    // A span whose parent is not here (in another system, or dropped) is shown as a root.
    const parent = s.parentSpanId && ids.has(s.parentSpanId) ? s.parentSpanId : null;
    children.set(parent, [...(children.get(parent) ?? []), s]);
  }
  const start = Math.min(...spans.map((s) => s.startMs));
  const total = Math.max(...spans.map((s) => s.startMs + s.durationMs)) - start || 1;
  const rows: string[][] = [];
  const visit = (parent: string | null, depth: number) => {
    for (const s of (children.get(parent) ?? []).sort((a, b) => a.startMs - b.startMs)) {
      const from = Math.floor(((s.startMs - start) / total) * width);
      const len = Math.max(1, Math.round((s.durationMs / total) * width));
      const bar = " ".repeat(from) + "█".repeat(Math.min(len, width - from));
      const name = `${"  ".repeat(depth)}${s.name}`;
      rows.push([
        s.status === "error" ? color.red(name) : name,
        s.app,
        `+${ms(s.startMs - start)}`,
        ms(s.durationMs),
        bar.padEnd(width),
      ]);
      visit(s.spanId, depth + 1);
    }
  };
  visit(null, 0);
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => visibleLength(r[i]!))));
  return (
    rows
      .map((r) =>
        r
          .map((cell, i) => (i < 4 ? cell + " ".repeat(widths[i]! - visibleLength(cell)) : cell))
          .join("  "),
      )
      .join("\n") + "\n"
  );
}

// eslint-disable-next-line no-control-regex -- colour codes are what is stripped
const visibleLength = (s: string) => s.replace(/\x1b\[[0-9;]*m/g, "").length;
