/**
 * What a deploy, stop or delete is refused for before it changes anything: a port a local
 * command app cannot have, a name another file deployed, a dependency taken down meanwhile,
 * a dependent deployed meanwhile. Each throws a `CaravanError` that says what to do.
 */
import { CaravanError } from "../../errors.ts";
import type { DeployRequest, Scope } from "../contract.ts";
import type { EnvironmentRow, Store } from "./store.ts";

/**
 * A command app's replicas listen on ports caravan picks (`$PORT`, one per replica, so a new
 * revision starts beside the old one): a port it declares cannot be honoured here, so it is
 * refused rather than ignored. (On a cluster the declared port is the container's.)
 */
export function refuseFixedPort(req: DeployRequest): void {
  const spec = req.spec;
  if (spec.kind !== "app" || spec.serveKind !== "command" || !spec.port.declared) return;
  throw new CaravanError(
    "VALIDATION",
    `${req.name} declares port ${spec.port.port}, but a local command app listens on the port caravan gives each replica in $PORT (on $HOST): remove port from ${req.name} and make its command use $PORT (e.g. args: ["--port", "$PORT"])`,
    { app: req.name, port: spec.port.port },
  );
}

/** The file that deployed `row`, when `req` comes from another one and does not replace it. */
export function takenFrom(req: DeployRequest, row: EnvironmentRow): string | undefined {
  const owner = row.request.source;
  return owner && req.source && owner !== req.source && !req.replace ? owner : undefined;
}

/**
 * An environment belongs to the file that deployed it: a second file declaring one of the
 * same name would silently replace it (and break its dependents), so it is refused, naming
 * both files, unless the deploy says `replace` (`--replace`, e.g. after moving the project).
 */
export function refuseTakeover(req: DeployRequest, row: EnvironmentRow | undefined): void {
  const owner = row && takenFrom(req, row);
  if (!owner) return;
  const where = `${req.scope.project}/${req.scope.domain}`;
  throw new CaravanError(
    "NAME_TAKEN",
    `${req.name} in ${where} was deployed from ${owner}, and ${req.source} declares another ${req.name}: rename one of them (or deploy to another --project/--domain), delete the deployed one (caravan delete ${req.name}), or pass --replace to take it over (e.g. after moving the project)`,
    { name: req.name, owner, source: req.source },
  );
}

/**
 * Refuses a deploy whose dependencies were deleted or stopped since its deploy began (by
 * another command): it would run against nothing. `DEPENDENCY_GONE` names them.
 */
export function refuseGoneDependencies(store: Store, req: DeployRequest): void {
  // A soft dependency (wait: false) may still be on its way: only waited-for ones count.
  const soft = new Set(req.spec.softDependsOn ?? []);
  const gone = req.spec.dependsOn.flatMap((dep) => {
    if (soft.has(dep)) return [];
    const row = store.get(req.scope, dep);
    if (!row) return [`${dep} (deleted)`];
    return row.desired === "running" ? [] : [`${dep} (stopped)`];
  });
  if (!gone.length) return;
  const names = req.spec.dependsOn.filter((d) => gone.some((g) => g.startsWith(`${d} `)));
  throw new CaravanError(
    "DEPENDENCY_GONE",
    `${req.name} was not started: its ${gone.length === 1 ? "dependency" : "dependencies"} ${gone.join(", ")} ${gone.length === 1 ? "is" : "are"} no longer running (taken down by another command while this deploy ran); deploy again to bring ${gone.length === 1 ? "it" : "them"} back`,
    { dependencies: names },
  );
}

/**
 * DEPENDENTS_EXIST when `name` has a running dependent now: those in the teardown's order
 * went first (dependents first), so one running now was deployed meanwhile.
 */
export function refuseNewDependents(store: Store, scope: Scope, name: string, verb: string): void {
  const dependents = store
    .list(scope)
    .filter((r) => r.desired === "running" && r.request.spec.dependsOn.includes(name))
    .map((r) => r.name);
  if (!dependents.length) return;
  throw new CaravanError(
    "DEPENDENTS_EXIST",
    `cannot ${verb} ${name}: ${dependents.join(", ")} (deployed while this ${verb} waited) depend${dependents.length === 1 ? "s" : ""} on it and ${dependents.length === 1 ? "is" : "are"} running; ${verb} ${dependents.length === 1 ? "it" : "them"} too, or pass --cascade`,
    { dependents },
  );
}
