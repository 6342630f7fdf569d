/**
 * What a teardown (`stop`, `delete`) takes down, and in which order, decided once for every
 * backend: the named environments must be deployed; every running dependent of theirs
 * (direct or through running ones) goes first, and only with `--cascade` — without it they
 * are all named in the refusal (stopping just the direct ones would be refused again). Pure.
 */
import { CaravanError } from "../errors.ts";
import { dependentsIndex, inReverseDependencyOrder, transitiveDependents } from "../plan/graph.ts";
import type { Scope } from "./contract.ts";

/** One deployed environment, as a backend records it. */
export interface DeployedNode {
  name: string;
  dependsOn: readonly string[];
  running: boolean;
}

/** The environments to take down, dependents first; throws NOT_DEPLOYED or DEPENDENTS_EXIST. */
export function teardownOrder(
  scope: Scope,
  deployed: readonly DeployedNode[],
  names: string[],
  opts: { cascade?: boolean; verb: "stop" | "delete"; where?: string },
): string[] {
  const known = deployed.map((d) => d.name);
  const missing = names.filter((n) => !known.includes(n));
  if (missing.length) throw notDeployed(scope, missing, known, opts.where);
  const blocking = transitiveDependents(names, dependentsIndex(deployed.filter((d) => d.running)));
  if (blocking.length && !opts.cascade) {
    const { verb } = opts;
    const one = blocking.length === 1;
    throw new CaravanError(
      "DEPENDENTS_EXIST",
      `cannot ${verb} ${names.join(", ")}: ${blocking.join(", ")} depend${one ? "s" : ""} on it and ${one ? "is" : "are"} running. ${verb[0]!.toUpperCase()}${verb.slice(1)} ${one ? "it" : "them"} too, or pass --cascade`,
      { dependents: blocking },
    );
  }
  return inReverseDependencyOrder(deployed, [...names, ...blocking]);
}

/** NOT_DEPLOYED, naming what is deployed there instead. */
export function notDeployed(
  scope: Scope,
  names: string[],
  known: string[],
  where?: string,
): CaravanError {
  const all = [...known].sort();
  return new CaravanError(
    "NOT_DEPLOYED",
    `${names.map((n) => `"${n}"`).join(", ")} ${names.length === 1 ? "is" : "are"} not deployed in ${scope.project}/${scope.domain}${where ? ` (${where})` : ""}; ${all.length ? `deployed: ${all.join(", ")}` : "nothing is deployed there"} (see caravan status --all)`,
    { names },
  );
}
