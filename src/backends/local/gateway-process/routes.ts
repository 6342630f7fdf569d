/**
 * The state the control plane gave the gateway (routes, options, replicas), as every process
 * of the gateway keeps it: the primary, to give a new worker; each worker too, so that an
 * orphaned one (its primary died) can hand the whole state to the successor it spawns.
 */
import type { RouteState, ToWorker } from "./protocol.ts";

export type Routes = Map<string, RouteState>;

/** Applies one operation of the control plane's to `routes` (others leave it as it is). */
export function applyToRoutes(routes: Routes, m: ToWorker): void {
  switch (m.t) {
    case "open": {
      const before = routes.get(m.app);
      routes.set(m.app, {
        app: m.app,
        ports: m.ports,
        options: m.options,
        replicas: before?.replicas ?? [],
      });
      return;
    }
    case "close":
      routes.delete(m.app);
      return;
    case "options": {
      const route = routes.get(m.app);
      if (route) route.options = m.options;
      return;
    }
    case "replica": {
      const route = routes.get(m.app);
      if (route)
        route.replicas = [...route.replicas.filter((r) => r.id !== m.replica.id), m.replica];
      return;
    }
    case "drain": {
      const route = routes.get(m.app);
      if (route) route.replicas = route.replicas.filter((r) => r.id !== m.replica);
      return;
    }
    case "sync":
      routes.clear();
      for (const r of m.routes) routes.set(r.app, r);
      return;
  }
}

/** The ports some route listens on: a listening socket on another port is no one's. */
export function portsInUse(routes: Routes): Set<number> {
  const ports = new Set<number>();
  for (const r of routes.values()) ports.add(r.ports.public).add(r.ports.internal);
  return ports;
}
