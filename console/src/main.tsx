/**
 * caravan's web console: the graph with live states, an environment's panel, task runs,
 * traces and history, for one project/domain. Everything comes from the control plane's HTTP API; live
 * changes from its server-sent event stream (`GET /v1/watch`).
 */
import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import {
  API,
  ApiError,
  call,
  query,
  type EnvStatus,
  type EventRecord,
  type RunRecord,
  type Scope,
} from "./api.ts";
import { Graph } from "./graph.tsx";
import { Panel } from "./panel.tsx";
import { RunList, RunView } from "./runs.tsx";
import { History } from "./history.tsx";
import { TraceList, TraceView } from "./traces.tsx";
import "./style.css";

type Route =
  | { view: "graph"; name?: string }
  | { view: "runs"; id?: string }
  | { view: "traces"; id?: string }
  | { view: "history" };

function routeOf(hash: string): Route {
  const [view, arg] = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (view === "runs" || view === "traces") return arg ? { view, id: arg } : { view };
  if (view === "history") return { view };
  return arg ? { view: "graph", name: arg } : { view: "graph" };
}

function useRoute(): [Route, (hash: string) => void] {
  const [route, setRoute] = useState(routeOf(location.hash));
  useEffect(() => {
    const on = () => setRoute(routeOf(location.hash));
    addEventListener("hashchange", on);
    return () => removeEventListener("hashchange", on);
  }, []);
  return [route, (hash) => (location.hash = hash)];
}

function initialScope(): Scope {
  const q = new URLSearchParams(location.search);
  return { project: q.get("project") ?? "default", domain: q.get("domain") ?? "development" };
}

/** The live view of a scope: status, events and runs, from the SSE stream. */
function useLive(scope: Scope) {
  const [envs, setEnvs] = useState<EnvStatus[]>();
  const [events, setEvents] = useState<EventRecord[]>([]);
  const [runs, setRuns] = useState<RunRecord[]>([]);
  const [connected, setConnected] = useState(false);
  const [denied, setDenied] = useState(false);
  useEffect(() => {
    let source: EventSource | undefined;
    let closed = false;
    setEnvs(undefined);
    (async () => {
      // The history so far, then the stream from the last event on.
      let after = 0;
      try {
        const first = await call<{ events: EventRecord[] }>(
          "GET",
          `/v1/events?${query({ ...scope, limit: 1000 })}`,
        );
        setEvents(first.events);
        after = first.events.at(-1)?.id ?? 0;
      } catch (e) {
        if (e instanceof ApiError && e.status === 401) return setDenied(true);
      }
      if (closed) return;
      source = new EventSource(`${API}/v1/watch?${query({ ...scope, after })}`);
      source.onopen = () => setConnected(true);
      source.onerror = () => {
        setConnected(false);
        // EventSource retries on its own; an expired session would never come back.
        call("GET", `/v1/events?${query({ ...scope, limit: 1 })}`).catch((e) => {
          if (e instanceof ApiError && e.status === 401) {
            source?.close();
            setDenied(true);
          }
        });
      };
      source.addEventListener("status", (m) =>
        setEnvs((JSON.parse(m.data) as { environments: EnvStatus[] }).environments),
      );
      source.addEventListener("event", (m) => {
        const e = JSON.parse(m.data) as EventRecord;
        // A reconnected stream starts again from the `after` it was opened with.
        if (e.id <= after) return;
        after = e.id;
        setEvents((prev) => [...prev, e].slice(-2000));
      });
      source.addEventListener("runs", (m) =>
        setRuns((JSON.parse(m.data) as { runs: RunRecord[] }).runs),
      );
    })();
    return () => {
      closed = true;
      source?.close();
    };
  }, [scope.project, scope.domain]);
  return { envs, events, runs, connected, denied };
}

function App() {
  const [scope, setScope] = useState(initialScope);
  const [scopes, setScopes] = useState<Scope[]>([]);
  const [route, go] = useRoute();
  const { envs, events, runs, connected, denied } = useLive(scope);

  useEffect(() => {
    call<{ environments: EnvStatus[] }>("GET", "/v1/status")
      .then(({ environments }) => {
        const seen = new Map(environments.map((e) => [`${e.project}/${e.domain}`, e]));
        seen.set(`${scope.project}/${scope.domain}`, scope as EnvStatus);
        setScopes([...seen.values()].map((e) => ({ project: e.project, domain: e.domain })));
      })
      .catch(() => {});
  }, [envs?.length]);

  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (e.key === "Escape" && route.view === "graph" && route.name) go("#/graph");
    };
    addEventListener("keydown", onKey);
    return () => removeEventListener("keydown", onKey);
  }, [route]);

  if (denied)
    return (
      <main class="denied">
        <h1>Not logged in</h1>
        <p>
          Run <code>npx caravan console</code> for a login link.
        </p>
      </main>
    );

  const selected =
    route.view === "graph" && route.name ? envs?.find((e) => e.name === route.name) : undefined;
  const runVersion = (id: string) => {
    const r = runs.find((x) => x.id === id);
    return r ? `${r.status}:${r.attempts}:${r.finishedAt ?? ""}` : "";
  };
  const tab = (view: Route["view"], label: string) => (
    <a href={`#/${view}`} aria-current={route.view === view ? "page" : undefined}>
      {label}
    </a>
  );

  return (
    <>
      <header class="top">
        <h1>caravan</h1>
        <nav aria-label="views">
          {tab("graph", "Graph")}
          {tab("runs", `Runs${runs.length ? ` (${runs.length})` : ""}`)}
          {tab("traces", "Traces")}
          {tab("history", "History")}
        </nav>
        <label class="scope">
          <span class="sr-only">project/domain</span>
          <select
            value={`${scope.project}/${scope.domain}`}
            onChange={(e) => {
              const [project, domain] = (e.target as HTMLSelectElement).value.split("/");
              const next = { project: project!, domain: domain! };
              history.replaceState(null, "", `?${query(next)}${location.hash}`);
              setScope(next);
            }}
          >
            {scopes.map((s) => (
              <option key={`${s.project}/${s.domain}`} value={`${s.project}/${s.domain}`}>
                {s.project}/{s.domain}
              </option>
            ))}
          </select>
        </label>
        <span class={`live ${connected ? "on" : "off"}`} role="status">
          {connected ? "live" : "reconnecting…"}
        </span>
      </header>
      <main class={`view-${route.view}${selected ? " with-panel" : ""}`}>
        {route.view === "graph" && (
          <>
            <div class="canvas">
              {envs ? (
                <Graph envs={envs} selected={selected?.name} onSelect={(n) => go(`#/graph/${n}`)} />
              ) : (
                <p>loading…</p>
              )}
            </div>
            {selected && (
              <Panel
                key={selected.name}
                scope={scope}
                env={selected}
                version={`${selected.revision}:${selected.state}`}
                onSelect={(n) => go(n ? `#/graph/${n}` : "#/graph")}
                onOpenRun={(id) => go(`#/runs/${id}`)}
              />
            )}
          </>
        )}
        {route.view === "runs" &&
          (route.id ? (
            <RunView
              scope={scope}
              id={route.id}
              version={runVersion(route.id)}
              onOpen={(id) => go(`#/runs/${id}`)}
            />
          ) : (
            <RunList runs={runs} onOpen={(id) => go(`#/runs/${id}`)} />
          ))}
        {route.view === "traces" &&
          (route.id ? (
            <TraceView key={route.id} id={route.id} />
          ) : (
            <TraceList scope={scope} apps={(envs ?? []).map((e) => e.name)} />
          ))}
        {route.view === "history" && <History events={events} />}
      </main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
