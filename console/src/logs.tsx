/** An app's log, streamed live from `GET /v1/logs?follow=true`: follow, pause, search. */
import { useEffect, useRef, useState } from "preact/hooks";
import { API, lines, query, type Scope } from "./api.ts";

const KEEP = 5000;

export function Logs({ scope, name }: { scope: Scope; name: string }) {
  const [all, setAll] = useState<string[]>([]);
  const [paused, setPaused] = useState(false);
  const [follow, setFollow] = useState(true);
  const [search, setSearch] = useState("");
  const [problem, setProblem] = useState<string>();
  const pausedRef = useRef(false);
  const held = useRef<string[]>([]);
  const view = useRef<HTMLPreElement>(null);

  useEffect(() => {
    setAll([]);
    held.current = [];
    const abort = new AbortController();
    let pending: string[] = [];
    let flush: number | undefined;
    (async () => {
      const path = `${API}/v1/logs?${query({ ...scope, name, tail: 300, follow: "true" })}`;
      const res = await fetch(path, { signal: abort.signal, credentials: "same-origin" });
      if (!res.ok) {
        const json = (await res.json().catch(() => ({}))) as { error?: { message?: string } };
        return setProblem(json.error?.message ?? `answered ${res.status}`);
      }
      for await (const line of lines(res, abort.signal)) {
        // Paused: kept aside, shown on resume; lines are batched per frame.
        if (pausedRef.current) held.current.push(line);
        else pending.push(line);
        flush ??= requestAnimationFrame(() => {
          flush = undefined;
          const add = pending;
          pending = [];
          setAll((prev) => [...prev, ...add].slice(-KEEP));
        });
      }
    })().catch((e: Error) => abort.signal.aborted || setProblem(e.message));
    return () => abort.abort();
  }, [scope.project, scope.domain, name]);

  useEffect(() => {
    if (follow && view.current) view.current.scrollTop = view.current.scrollHeight;
  }, [all, follow, search]);

  const togglePause = () => {
    pausedRef.current = !paused;
    if (paused) {
      const add = held.current;
      held.current = [];
      setAll((prev) => [...prev, ...add].slice(-KEEP));
    }
    setPaused(!paused);
  };
  const needle = search.toLowerCase();
  const shown = needle ? all.filter((l) => l.toLowerCase().includes(needle)) : all;

  return (
    <section class="logs" aria-label={`logs of ${name}`}>
      <div class="toolbar">
        <h3>Logs</h3>
        <label>
          <input
            type="checkbox"
            checked={follow}
            onChange={(e) => setFollow((e.target as HTMLInputElement).checked)}
          />{" "}
          follow
        </label>
        <button type="button" onClick={togglePause} aria-pressed={paused}>
          {paused ? `resume (${held.current.length} new)` : "pause"}
        </button>
        <input
          type="search"
          placeholder="search"
          aria-label="search the log"
          value={search}
          onInput={(e) => setSearch((e.target as HTMLInputElement).value)}
        />
      </div>
      {problem && <p class="error">{problem}</p>}
      <pre class="log-lines" ref={view} tabIndex={0} data-paused={paused ? "true" : "false"}>
        {shown.join("\n")}
      </pre>
    </section>
  );
}
