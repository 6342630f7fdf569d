/**
 * History: deploys (each environment's outcome, old → new revision), read from the control
 * plane's events, and every event (crashes, restarts, scaling, degraded).
 */
import { useState } from "preact/hooks";
import { formatTime, type EventRecord } from "./api.ts";

interface Change {
  name: string;
  outcome: "ready" | "unchanged" | "failed" | "deploying";
  from?: string;
  to: string;
}

/** Deploy events close together are one deploy; an environment's outcome follows its event. */
export function deploysOf(events: EventRecord[]): { at: string; changes: Change[] }[] {
  const deploys: { at: string; last: number; changes: Change[] }[] = [];
  const revisionOf = new Map<string, string>();
  for (const e of events) {
    if (e.type === "deploy" || e.type === "unchanged") {
      const t = Date.parse(e.at);
      let d = deploys.at(-1);
      if (!d || t - d.last > 10_000) deploys.push((d = { at: e.at, last: t, changes: [] }));
      d.last = t;
      const from = revisionOf.get(e.name);
      d.changes.push({
        name: e.name,
        outcome: e.type === "unchanged" ? "unchanged" : "deploying",
        ...(from && from !== e.message ? { from } : {}),
        to: e.message,
      });
      revisionOf.set(e.name, e.message);
    } else if (e.type === "failed" || e.type === "job-failed") {
      const change = deploys
        .at(-1)
        ?.changes.find((c) => c.name === e.name && c.outcome === "deploying");
      if (change) change.outcome = "failed";
    }
  }
  for (const d of deploys)
    for (const c of d.changes) if (c.outcome === "deploying") c.outcome = "ready";
  return deploys.reverse().map(({ at, changes }) => ({ at, changes }));
}

export function History({ events }: { events: EventRecord[] }) {
  const [filter, setFilter] = useState("");
  const deploys = deploysOf(events);
  const shown = events.filter((e) => !filter || e.type === filter || e.name === filter).reverse();
  const types = [...new Set(events.map((e) => e.type))].sort();
  return (
    <div class="history">
      <section aria-label="deploys">
        <h2>Deploys</h2>
        {!deploys.length && <p class="empty">No deploys recorded.</p>}
        {deploys.map((d) => (
          <div class="deploy" key={d.at}>
            <h3>{formatTime(d.at)}</h3>
            <ul>
              {d.changes.map((c) => (
                <li key={c.name}>
                  <b>{c.name}</b> <span class={`badge outcome-${c.outcome}`}>{c.outcome}</span>{" "}
                  <code>
                    {c.from ? `${c.from.slice(0, 8)} → ` : ""}
                    {c.to.slice(0, 8)}
                  </code>
                </li>
              ))}
            </ul>
          </div>
        ))}
      </section>
      <section aria-label="events">
        <h2>Events</h2>
        <label>
          show{" "}
          <select value={filter} onChange={(e) => setFilter((e.target as HTMLSelectElement).value)}>
            <option value="">everything</option>
            {types.map((t) => (
              <option key={t} value={t}>
                {t}
              </option>
            ))}
          </select>
        </label>
        <table class="events">
          <tbody>
            {shown.map((e) => (
              <tr key={e.id} data-type={e.type}>
                <td>{formatTime(e.at)}</td>
                <td>{e.name}</td>
                <td>
                  <span class={`badge event-${e.type}`}>{e.type}</span>
                </td>
                <td>{e.message}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </div>
  );
}
