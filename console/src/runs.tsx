/** Task runs: the list (live), and one run with its inputs, output or error, logs; re-run. */
import { useEffect, useState } from "preact/hooks";
import { call, formatMs, formatTime, type RunRecord, type Scope } from "./api.ts";

export function RunList({ runs, onOpen }: { runs: RunRecord[]; onOpen: (id: string) => void }) {
  if (!runs.length)
    return <p class="empty">No task runs yet: run one from a task environment's panel.</p>;
  return (
    <table class="runs">
      <thead>
        <tr>
          <th>status</th>
          <th>task</th>
          <th>duration</th>
          <th>caller</th>
          <th>created</th>
          <th>id</th>
        </tr>
      </thead>
      <tbody>
        {runs.map((r) => (
          <tr key={r.id} data-run={r.id}>
            <td>
              <span class={`badge run-${r.status}`}>{r.status}</span>
            </td>
            <td>
              <a href={`#/runs/${r.id}`} onClick={(e) => (e.preventDefault(), onOpen(r.id))}>
                {r.task}
              </a>
            </td>
            <td>{formatMs(r.durationMs)}</td>
            <td>{r.caller ?? "-"}</td>
            <td>{formatTime(r.createdAt)}</td>
            <td>
              <code>{r.id}</code>
            </td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

export function RunView({
  scope,
  id,
  version,
  onOpen,
}: {
  scope: Scope;
  id: string;
  /** The run's row in the live list: when it changes, the whole run is read again. */
  version: string;
  onOpen: (id: string) => void;
}) {
  const [run, setRun] = useState<RunRecord>();
  const [problem, setProblem] = useState<string>();
  useEffect(() => {
    call<{ run: RunRecord }>("GET", `/v1/runs/${encodeURIComponent(id)}`)
      .then((r) => setRun(r.run))
      .catch((e: Error) => setProblem(e.message));
  }, [id, version]);
  if (problem) return <p class="error">{problem}</p>;
  if (!run) return <p>loading…</p>;
  const rerun = async () => {
    try {
      const { run: next } = await call<{ run: RunRecord }>("POST", "/v1/runs", {
        scope,
        task: run.task,
        args: run.args,
      });
      onOpen(next.id);
    } catch (e) {
      setProblem((e as Error).message);
    }
  };
  return (
    <article class="run" aria-label={`run ${run.id}`}>
      <header>
        <h2>
          {run.task} <small>{run.id}</small>
        </h2>
        <span class={`badge run-${run.status}`} data-testid="run-status">
          {run.status}
        </span>
        <button type="button" onClick={rerun}>
          Re-run
        </button>
      </header>
      <dl class="facts">
        <dt>attempts</dt>
        <dd>{run.attempts}</dd>
        <dt>duration</dt>
        <dd>{formatMs(run.durationMs)}</dd>
        <dt>caller</dt>
        <dd>{run.caller ?? "-"}</dd>
        <dt>revision</dt>
        <dd>
          <code>{run.revision.slice(0, 12)}</code>
        </dd>
        <dt>created</dt>
        <dd>{formatTime(run.createdAt)}</dd>
      </dl>
      <h3>Inputs</h3>
      <pre class="json">{JSON.stringify(run.args, null, 2)}</pre>
      {run.status === "succeeded" && (
        <>
          <h3>Output</h3>
          <pre class="json" data-testid="run-output">
            {JSON.stringify(run.output, null, 2)}
          </pre>
        </>
      )}
      {run.error && (
        <>
          <h3>Error</h3>
          <pre class="json error">
            {run.error.stack ?? `${run.error.name}: ${run.error.message}`}
          </pre>
        </>
      )}
      <h3>Logs</h3>
      <pre class="log-lines">{run.logs || "(nothing printed)"}</pre>
    </article>
  );
}
