/**
 * An environment's panel: endpoints, revision, replicas, traffic, inputs, dependencies and
 * dependents, the OTLP metrics it reports, its log (and OTLP log records), and the actions the CLI has (stop, start, restart, scale, delete).
 */
import { useEffect, useRef, useState } from "preact/hooks";
import {
  call,
  formatMs,
  formatTime,
  query,
  shownState,
  type EnvDescription,
  type EnvStatus,
  type MetricSeries,
  type RunRecord,
  type Scope,
} from "./api.ts";
import { MetricChart, TrafficChart, WINDOW_S, type Sample } from "./chart.tsx";
import { Logs } from "./logs.tsx";
import { usePolled } from "./poll.ts";
import { AppLogRecords } from "./traces.tsx";

interface Props {
  scope: Scope;
  env: EnvStatus;
  /** A change the live stream saw (new revision, state): the description is read again. */
  version: string;
  onSelect: (name: string | undefined) => void;
  onOpenRun: (id: string) => void;
}

export function Panel({ scope, env, version, onSelect, onOpenRun }: Props) {
  const [desc, setDesc] = useState<EnvDescription>();
  const [busy, setBusy] = useState<string>();
  const [problem, setProblem] = useState<string>();
  const [confirming, setConfirming] = useState(false);

  useEffect(() => {
    call<EnvDescription>("GET", `/v1/environments/${env.name}?${query(scope)}`)
      .then(setDesc)
      .catch((e: Error) => setProblem(e.message));
  }, [scope.project, scope.domain, env.name, version]);

  const act = async (what: string, path: string, body: Record<string, unknown>) => {
    setBusy(what);
    setProblem(undefined);
    try {
      await call("POST", path, { scope, ...body });
    } catch (e) {
      setProblem((e as Error).message);
    } finally {
      setBusy(undefined);
    }
  };
  const state = shownState(env);
  const stopped = env.state === "stopped";
  const deployedAt = desc?.revisions.find((r) => r.revision === env.revision)?.deployedAt;

  return (
    <aside class="panel" aria-label={`${env.name} details`}>
      <header>
        <h2>{env.name}</h2>
        <span class={`badge state-${state.replace(/ /g, "-")}`} data-testid="panel-state">
          {state}
        </span>
        <button
          type="button"
          class="close"
          aria-label="close the panel"
          onClick={() => onSelect(undefined)}
        >
          ×
        </button>
      </header>
      {desc?.description && <p>{desc.description}</p>}
      {env.health?.reason && <p class="warn">degraded: {env.health.reason}</p>}
      {env.error && <p class="error">{env.error}</p>}

      <div class="actions" role="toolbar" aria-label="actions">
        {stopped ? (
          <button
            type="button"
            disabled={!!busy}
            onClick={() => act("start", "/v1/start", { name: env.name })}
          >
            {busy === "start" ? "starting…" : "Start"}
          </button>
        ) : (
          <>
            <button
              type="button"
              disabled={!!busy}
              onClick={() => act("stop", "/v1/stop", { names: [env.name] })}
            >
              {busy === "stop" ? "stopping…" : "Stop"}
            </button>
            <button
              type="button"
              disabled={!!busy}
              onClick={() => act("restart", "/v1/restart", { name: env.name })}
            >
              {busy === "restart" ? "restarting…" : "Restart"}
            </button>
          </>
        )}
        {desc?.scaling && !stopped && (
          <Scale
            min={desc.scaling.min}
            max={desc.scaling.max}
            current={env.replicas ?? 0}
            disabled={!!busy}
            onScale={(n) => act("scale", "/v1/scale", { name: env.name, replicas: n })}
          />
        )}
        <button type="button" class="danger" disabled={!!busy} onClick={() => setConfirming(true)}>
          Delete…
        </button>
      </div>
      {confirming && desc && (
        <div class="confirm" role="alertdialog" aria-label={`delete ${env.name}?`}>
          <p>
            Delete <b>{env.name}</b>
            {desc.dependents.length ? (
              <>
                {" "}
                and what depends on it, first: <b>{desc.dependents.join(", ")}</b>
              </>
            ) : null}
            ? Its endpoints and logs go with it.
          </p>
          <button
            type="button"
            class="danger"
            onClick={async () => {
              setConfirming(false);
              await act("delete", "/v1/delete", {
                names: [env.name],
                cascade: desc.dependents.length > 0,
              });
              onSelect(undefined);
            }}
          >
            Delete{" "}
            {desc.dependents.length ? `${desc.dependents.length + 1} environments` : env.name}
          </button>
          <button type="button" onClick={() => setConfirming(false)} autoFocus>
            Cancel
          </button>
        </div>
      )}
      {problem && (
        <p class="error" role="alert">
          {problem}
        </p>
      )}

      <dl class="facts">
        {env.endpoint && (
          <>
            <dt>public endpoint</dt>
            <dd>
              <Copyable text={env.endpoint} />
              {desc?.requiresAuth ? " (token or login)" : ""}
            </dd>
          </>
        )}
        {env.internalEndpoint && (
          <>
            <dt>internal endpoint</dt>
            <dd>
              <Copyable text={env.internalEndpoint} />
            </dd>
          </>
        )}
        <dt>revision</dt>
        <dd>
          <code>{env.revision.slice(0, 12)}</code>
          {deployedAt ? ` deployed ${formatTime(deployedAt)}` : ""}
        </dd>
        {env.kind === "app" && (
          <>
            <dt>replicas</dt>
            <dd data-testid="replicas">
              {env.replicas ?? 0}
              {desc?.scaling ? ` (${desc.scaling.min}–${desc.scaling.max})` : ""}, pids{" "}
              {env.pids.join(", ") || "-"}
            </dd>
          </>
        )}
        <dt>restarts</dt>
        <dd data-testid="restarts">{env.restarts}</dd>
        <dt>depends on</dt>
        <dd>
          <Names names={desc?.dependsOn ?? env.dependsOn ?? []} onSelect={onSelect} />
        </dd>
        <dt>dependents</dt>
        <dd>
          <Names names={desc?.dependents ?? []} onSelect={onSelect} />
        </dd>
        {!!desc?.inputs.length && (
          <>
            <dt>inputs</dt>
            <dd>
              {desc.inputs.map((i) => (
                <div key={i.name}>
                  <code>{i.name}</code> {i.kind} (<code>${i.envVar}</code>)
                </div>
              ))}
            </dd>
          </>
        )}
        {!!desc?.secrets.length && (
          <>
            <dt>secrets</dt>
            <dd>{desc.secrets.join(", ")} (values never shown)</dd>
          </>
        )}
      </dl>

      {env.kind === "app" && <TrafficView env={env} />}
      {env.kind === "task" && desc?.tasks && (
        <RunForm scope={scope} tasks={desc.tasks} onOpenRun={onOpenRun} />
      )}
      <MetricsView scope={scope} app={env.name} />
      <Logs scope={scope} name={env.name} />
      <AppLogRecords scope={scope} app={env.name} />
    </aside>
  );
}

function Names({ names, onSelect }: { names: string[]; onSelect: (n: string) => void }) {
  if (!names.length) return <>-</>;
  return (
    <>
      {names.map((n, i) => (
        <span key={n}>
          {i ? ", " : ""}
          <a href={`#/graph/${n}`} onClick={(e) => (e.preventDefault(), onSelect(n))}>
            {n}
          </a>
        </span>
      ))}
    </>
  );
}

function Copyable({ text }: { text: string }) {
  const [done, setDone] = useState(false);
  return (
    <span class="copyable">
      <a href={text} target="_blank" rel="noreferrer">
        {text}
      </a>{" "}
      <button
        type="button"
        aria-label={`copy ${text}`}
        onClick={async () => {
          await navigator.clipboard?.writeText(text).catch(() => {});
          setDone(true);
          setTimeout(() => setDone(false), 1200);
        }}
      >
        {done ? "copied" : "copy"}
      </button>
    </span>
  );
}

function Scale(props: {
  min: number;
  max: number;
  current: number;
  disabled: boolean;
  onScale: (n: number) => void;
}) {
  const [n, setN] = useState(props.current);
  useEffect(() => setN(props.current), [props.current]);
  if (props.min === props.max) return null;
  return (
    <form
      class="scale"
      onSubmit={(e) => {
        e.preventDefault();
        props.onScale(n);
      }}
    >
      <label>
        replicas{" "}
        <input
          type="number"
          min={props.min}
          max={props.max}
          value={n}
          onInput={(e) => setN(Number((e.target as HTMLInputElement).value))}
        />
      </label>
      <button type="submit" disabled={props.disabled || n === props.current}>
        Scale
      </button>
    </form>
  );
}

/** The OTLP metrics the app reports (its SDK's, or its own), a chart each. */
function MetricsView({ scope, app }: { scope: Scope; app: string }) {
  const [answer] = usePolled(
    () =>
      call<{ metrics: MetricSeries[] }>(
        "GET",
        `/v1/metrics?${query({ ...scope, app, limit: 300 })}`,
      ),
    [scope.project, scope.domain, app],
  );
  if (!answer?.metrics.length) return null;
  return (
    <section class="metrics" aria-label="metrics">
      <h3>Metrics</h3>
      {answer.metrics.map((m) => (
        <MetricChart key={m.name} metric={m} />
      ))}
    </section>
  );
}

/** Requests, 5xx and latency, with a chart of the last minutes: a sample a second. */
function TrafficView({ env }: { env: EnvStatus }) {
  const [samples, setSamples] = useState<Sample[]>([]);
  const latest = useRef(env.traffic);
  latest.current = env.traffic;
  useEffect(() => {
    let last: { t: number; requests: number; errors: number } | undefined;
    setSamples([]);
    const timer = setInterval(() => {
      const t = latest.current;
      if (!t) return;
      const now = Date.now() / 1000;
      const prev = last;
      last = { t: now, requests: t.requests, errors: t.errors };
      if (!prev) return;
      const dt = now - prev.t;
      const sample = {
        t: now,
        rps: Math.max(0, (t.requests - prev.requests) / dt),
        errors: Math.max(0, (t.errors - prev.errors) / dt),
        p99: t.p99Ms,
      };
      setSamples((s) => [...s, sample].slice(-WINDOW_S));
    }, 1000);
    return () => clearInterval(timer);
  }, [env.name]);
  const t = env.traffic;
  return (
    <section class="traffic" aria-label="traffic">
      <h3>Traffic</h3>
      {t ? (
        <p>
          {t.requests} requests, {t.errors} 5xx, p50 {formatMs(t.p50Ms)}, p99 {formatMs(t.p99Ms)}
        </p>
      ) : (
        <p>not serving</p>
      )}
      <TrafficChart samples={samples} />
    </section>
  );
}

function RunForm({
  scope,
  tasks,
  onOpenRun,
}: {
  scope: Scope;
  tasks: string[];
  onOpenRun: (id: string) => void;
}) {
  const [task, setTask] = useState(tasks[0] ?? "");
  const [args, setArgs] = useState("[]");
  const [problem, setProblem] = useState<string>();
  return (
    <form
      class="run-form"
      onSubmit={async (e) => {
        e.preventDefault();
        setProblem(undefined);
        try {
          const parsed = JSON.parse(args) as unknown;
          if (!Array.isArray(parsed)) throw new Error('arguments are a JSON array, e.g. [1, "a"]');
          const { run } = await call<{ run: RunRecord }>("POST", "/v1/runs", {
            scope,
            task,
            args: parsed,
          });
          onOpenRun(run.id);
        } catch (err) {
          setProblem((err as Error).message);
        }
      }}
    >
      <h3>Run a task</h3>
      <label>
        task{" "}
        <select value={task} onChange={(e) => setTask((e.target as HTMLSelectElement).value)}>
          {tasks.map((t) => (
            <option key={t} value={t}>
              {t}
            </option>
          ))}
        </select>
      </label>
      <label>
        arguments (JSON array){" "}
        <textarea
          rows={2}
          value={args}
          onInput={(e) => setArgs((e.target as HTMLTextAreaElement).value)}
        />
      </label>
      <button type="submit">Run</button>
      {problem && (
        <p class="error" role="alert">
          {problem}
        </p>
      )}
    </form>
  );
}
