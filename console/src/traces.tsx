/**
 * Traces: the newest traces of the scope (filters by app, status, minimum duration; polled),
 * and one trace as a waterfall across apps with the OTLP log records written within it.
 */
import { Fragment } from "preact";
import { useRef, useState } from "preact/hooks";
import {
  call,
  colourOf,
  formatMs,
  query,
  type LogRecordView,
  type Scope,
  type SpanView,
  type TraceSummary,
} from "./api.ts";
import { usePolled } from "./poll.ts";

export function AppName({ app }: { app: string }) {
  return (
    <span class="app-name">
      <span class="swatch" style={{ background: colourOf(app) }} aria-hidden="true" />
      {app}
    </span>
  );
}

export function TraceList({ scope, apps }: { scope: Scope; apps: string[] }) {
  const [app, setApp] = useState("");
  const [status, setStatus] = useState("");
  const [minMs, setMinMs] = useState("");
  const [answer, problem] = usePolled(
    () =>
      call<{ traces: TraceSummary[] }>(
        "GET",
        `/v1/traces?${query({
          ...scope,
          app: app || undefined,
          status: status || undefined,
          minDurationMs: Number(minMs) > 0 ? Number(minMs) : undefined,
          limit: 100,
        })}`,
      ),
    [scope.project, scope.domain, app, status, minMs],
  );
  const traces = answer?.traces;
  return (
    <section class="traces" aria-label="traces">
      <form class="filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          app{" "}
          <select
            value={app}
            aria-label="filter by app"
            onChange={(e) => setApp((e.target as HTMLSelectElement).value)}
          >
            <option value="">any</option>
            {apps.map((a) => (
              <option key={a} value={a}>
                {a}
              </option>
            ))}
          </select>
        </label>
        <label>
          status{" "}
          <select
            value={status}
            aria-label="filter by status"
            onChange={(e) => setStatus((e.target as HTMLSelectElement).value)}
          >
            <option value="">any</option>
            <option value="ok">ok</option>
            <option value="error">error</option>
          </select>
        </label>
        <label>
          at least{" "}
          <input
            type="number"
            min="0"
            step="any"
            inputMode="decimal"
            value={minMs}
            aria-label="minimum duration (ms)"
            onInput={(e) => setMinMs((e.target as HTMLInputElement).value)}
          />{" "}
          ms
        </label>
      </form>
      {problem && <p class="error">{problem}</p>}
      {traces && !traces.length && (
        <p class="empty">
          No traces{app || status || minMs ? " match" : " yet"}: requests to the apps show up here.
        </p>
      )}
      {!!traces?.length && (
        <table class="trace-list">
          <thead>
            <tr>
              <th>status</th>
              <th>root span</th>
              <th>apps</th>
              <th>spans</th>
              <th>duration</th>
              <th>started</th>
            </tr>
          </thead>
          <tbody>
            {traces.map((t) => (
              <tr key={t.traceId} data-trace={t.traceId}>
                <td>
                  <span class={`badge trace-${t.status}`}>{t.status}</span>
                </td>
                <td>
                  <a href={`#/traces/${t.traceId}`}>{t.root}</a>
                </td>
                <td>
                  {t.apps.map((a) => (
                    <AppName key={a} app={a} />
                  ))}
                </td>
                <td>{t.spans}</td>
                <td>{formatMs(t.durationMs)}</td>
                <td>{new Date(t.startMs).toLocaleTimeString()}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

interface Row {
  span: SpanView;
  depth: number;
}

/** Spans depth first, each under its parent (a span whose parent is not kept is a root). */
function rowsOf(spans: SpanView[]): Row[] {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string | null, SpanView[]>();
  for (const s of spans) {
    const parent = s.parentSpanId && ids.has(s.parentSpanId) ? s.parentSpanId : null;
    children.set(parent, [...(children.get(parent) ?? []), s]);
  }
  const rows: Row[] = [];
  const visit = (parent: string | null, depth: number) => {
    for (const span of (children.get(parent) ?? []).sort((a, b) => a.startMs - b.startMs)) {
      rows.push({ span, depth });
      visit(span.spanId, depth + 1);
    }
  };
  visit(null, 0);
  return rows;
}

export function TraceView({ id }: { id: string }) {
  const [trace, problem] = usePolled(
    () =>
      call<{ spans: SpanView[]; logs: LogRecordView[] }>(
        "GET",
        `/v1/traces/${encodeURIComponent(id)}`,
      ),
    [id],
  );
  const [selected, setSelected] = useState<string>();
  const list = useRef<HTMLDivElement>(null);
  if (!trace) return problem ? <p class="error">{problem}</p> : <p>loading trace {id}…</p>;

  const rows = rowsOf(trace.spans);
  const start = Math.min(...trace.spans.map((s) => s.startMs));
  const end = Math.max(...trace.spans.map((s) => s.startMs + s.durationMs));
  const total = Math.max(end - start, 0.001);
  const current = trace.spans.find((s) => s.spanId === selected);
  const index = rows.findIndex((r) => r.span.spanId === selected);
  const focusRow = (i: number) => {
    const row = rows[Math.max(0, Math.min(rows.length - 1, i))];
    if (!row) return;
    setSelected(row.span.spanId);
    list.current
      ?.querySelector<HTMLElement>(`[data-span="${row.span.spanId}"]`)
      ?.focus({ preventScroll: false });
  };
  const onKey = (e: KeyboardEvent) => {
    const moves: Record<string, number> = {
      ArrowDown: index + 1,
      ArrowUp: index - 1,
      Home: 0,
      End: rows.length - 1,
    };
    if (e.key in moves) {
      e.preventDefault();
      focusRow(moves[e.key]!);
    }
  };

  return (
    <article class="trace">
      <header>
        <h2>{rows[0]?.span.name ?? id}</h2>
        <span>
          {trace.spans.length} spans, {formatMs(total)}
        </span>
        <code>{id}</code>
        <a href="#/traces">all traces</a>
      </header>
      {problem && <p class="error">{problem}</p>}
      <div class="trace-body">
        <div
          class="waterfall"
          role="listbox"
          aria-label="spans (arrow keys move, the selected span's details are beside)"
          ref={list}
          onKeyDown={onKey}
        >
          {rows.map(({ span, depth }, i) => {
            const left = ((span.startMs - start) / total) * 100;
            const width = Math.max((span.durationMs / total) * 100, 0.4);
            const isSelected = span.spanId === selected;
            return (
              <div
                key={span.spanId}
                class={`span-row${isSelected ? " selected" : ""}${span.status === "error" ? " failed" : ""}`}
                role="option"
                aria-selected={isSelected}
                tabIndex={isSelected || (index < 0 && i === 0) ? 0 : -1}
                data-span={span.spanId}
                data-app={span.app}
                data-depth={depth}
                onClick={() => focusRow(i)}
                onFocus={() => setSelected(span.spanId)}
              >
                <span class="span-name" style={{ paddingLeft: `${depth * 1.1}em` }}>
                  {span.name}
                  {span.status === "error" && <span class="sr-only"> (error)</span>}
                </span>
                <span class="span-app">
                  <AppName app={span.app} />
                </span>
                <span class="span-track">
                  <span
                    class="span-bar"
                    style={{
                      left: `${left}%`,
                      width: `${Math.min(width, 100 - left)}%`,
                      background: colourOf(span.app),
                    }}
                  />
                </span>
                <span class="span-time">{formatMs(span.durationMs)}</span>
              </div>
            );
          })}
        </div>
        <aside class="span-details" aria-label="the selected span">
          {current ? (
            <SpanDetails span={current} offsetMs={current.startMs - start} />
          ) : (
            <p class="empty">Select a span to see its attributes.</p>
          )}
        </aside>
      </div>
      <TraceLogs
        logs={trace.logs}
        start={start}
        selected={selected}
        known={new Set(trace.spans.map((s) => s.spanId))}
        onSelect={(spanId) => focusRow(rows.findIndex((r) => r.span.spanId === spanId))}
      />
    </article>
  );
}

function SpanDetails({ span, offsetMs }: { span: SpanView; offsetMs: number }) {
  const facts: [string, unknown][] = [
    ["app", span.app],
    ["kind", span.kind],
    ["status", span.status + (span.statusMessage ? `: ${span.statusMessage}` : "")],
    ["starts at", `+${formatMs(offsetMs)}`],
    ["duration", formatMs(span.durationMs)],
    ["span id", span.spanId],
    ...Object.entries(span.attributes),
  ];
  return (
    <>
      <h3>{span.name}</h3>
      <dl class="attributes" data-testid="span-attributes">
        {facts.map(([k, v]) => (
          <Fragment key={k}>
            <dt>{k}</dt>
            <dd>{typeof v === "string" ? v : JSON.stringify(v)}</dd>
          </Fragment>
        ))}
      </dl>
    </>
  );
}

/** The log records written within the trace; one of a kept span selects it. */
function TraceLogs(props: {
  logs: LogRecordView[];
  start: number;
  selected?: string;
  known: Set<string>;
  onSelect: (spanId: string) => void;
}) {
  return (
    <section class="trace-logs" aria-label="logs in this trace">
      <h3>Logs in this trace</h3>
      {!props.logs.length ? (
        <p class="empty">No log records: an app's OTLP logs with this trace's id appear here.</p>
      ) : (
        <table>
          <tbody>
            {props.logs.map((l, i) => (
              <tr key={i} class={l.spanId && l.spanId === props.selected ? "selected" : ""}>
                <td>+{formatMs(l.timeMs - props.start)}</td>
                <td>
                  <AppName app={l.app} />
                </td>
                <td>{l.severity || "-"}</td>
                <td class="log-body">{l.body}</td>
                <td>
                  {l.spanId && props.known.has(l.spanId) && (
                    <button type="button" onClick={() => props.onSelect(l.spanId!)}>
                      its span
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}

/** An app's newest OTLP log records (the app panel); one written in a trace links to it. */
export function AppLogRecords({ scope, app }: { scope: Scope; app: string }) {
  const [answer] = usePolled(
    () =>
      call<{ logs: LogRecordView[] }>(
        "GET",
        `/v1/log-records?${query({ ...scope, app, limit: 50 })}`,
      ),
    [scope.project, scope.domain, app],
  );
  if (!answer?.logs.length) return null;
  return (
    <section class="log-records" aria-label="structured logs">
      <h3>Structured logs (OTLP)</h3>
      <table>
        <tbody>
          {answer.logs.map((l, i) => (
            <tr key={i}>
              <td>{new Date(l.timeMs).toLocaleTimeString()}</td>
              <td>{l.severity || "-"}</td>
              <td class="log-body">{l.body}</td>
              <td>{l.traceId && <a href={`#/traces/${l.traceId}`}>trace</a>}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
