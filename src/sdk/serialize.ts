/**
 * Task arguments and results cross process boundaries as JSON. A value JSON would silently
 * change (a function dropped, a Map emptied, NaN turned into null) is rejected up front,
 * naming where it is, rather than arriving as something else.
 */
import { CaravanError } from "../errors.ts";

/** Throws `NOT_SERIALIZABLE` naming the path of the first value JSON cannot carry. */
export function assertJsonValue(value: unknown, label: string, what: string): void {
  const problem = findProblem(value, label, new Set());
  if (problem) {
    throw new CaravanError(
      "NOT_SERIALIZABLE",
      `${what}: ${problem.path} is ${problem.why}; task inputs and outputs must be JSON (strings, numbers, booleans, null, arrays, plain objects)`,
      { path: problem.path },
    );
  }
}

function findProblem(
  value: unknown,
  path: string,
  seen: Set<object>,
): { path: string; why: string } | undefined {
  switch (typeof value) {
    case "string":
    case "boolean":
      return undefined;
    case "number":
      return Number.isFinite(value) ? undefined : { path, why: `${value} (not a finite number)` };
    case "undefined":
      return undefined; // a missing optional argument or property: JSON leaves it out
    case "bigint":
      return { path, why: "a BigInt (convert it, e.g. String(x), and parse it in the task)" };
    case "function":
      return { path, why: "a function" };
    case "symbol":
      return { path, why: "a symbol" };
  }
  if (value === null) return undefined;
  const obj = value as object;
  if (seen.has(obj)) return { path, why: "a reference back to itself (a cycle)" };
  const proto = Object.getPrototypeOf(obj);
  if (!Array.isArray(obj) && proto !== Object.prototype && proto !== null) {
    const kind = (obj.constructor as { name?: string } | undefined)?.name || "an object";
    const hint =
      obj instanceof Date
        ? " (pass date.toISOString())"
        : obj instanceof Map || obj instanceof Set
          ? " (use an array or a plain object)"
          : "";
    return { path, why: `a ${kind}${hint}, not a plain object` };
  }
  seen.add(obj);
  try {
    if (Array.isArray(obj)) {
      for (let i = 0; i < obj.length; i++) {
        // In an array, JSON turns undefined (or a hole) into null.
        if (obj[i] === undefined) return { path: `${path}[${i}]`, why: "undefined (use null)" };
        const p = findProblem(obj[i], `${path}[${i}]`, seen);
        if (p) return p;
      }
    } else {
      for (const [k, v] of Object.entries(obj)) {
        const p = findProblem(
          v,
          /^[A-Za-z_$][\w$]*$/.test(k) ? `${path}.${k}` : `${path}[${JSON.stringify(k)}]`,
          seen,
        );
        if (p) return p;
      }
    }
  } finally {
    seen.delete(obj);
  }
  return undefined;
}

/**
 * The parameter names of a function, from its source (`(epochs, lr = 0.1)` → epochs, lr), so
 * `caravan run … --input epochs=3` can pass arguments by name. Destructured or rest
 * parameters give `undefined` at their position.
 */
export function parameterNames(fn: (...args: never[]) => unknown): (string | undefined)[] {
  // Brackets and commas inside default strings or comments are not the list's own.
  const src = blankLiterals(Function.prototype.toString.call(fn));
  let list: string;
  const arrow = /^(?:async\s*)?([A-Za-z_$][\w$]*)\s*=>/.exec(src);
  if (arrow) list = arrow[1]!;
  else {
    const open = src.indexOf("(");
    if (open < 0) return [];
    let depth = 0;
    let end = open;
    for (let i = open; i < src.length; i++) {
      const c = src[i];
      if (c === "(" || c === "[" || c === "{") depth++;
      else if (c === ")" || c === "]" || c === "}") depth--;
      if (depth === 0) {
        end = i;
        break;
      }
    }
    list = src.slice(open + 1, end);
  }
  // Split on top-level commas only (defaults may contain calls, objects or arrays).
  const parts: string[] = [];
  let depth = 0;
  let current = "";
  for (const c of list) {
    if (c === "(" || c === "[" || c === "{") depth++;
    else if (c === ")" || c === "]" || c === "}") depth--;
    if (c === "," && depth === 0) {
      parts.push(current);
      current = "";
    } else current += c;
  }
  if (current.trim()) parts.push(current);
  return parts.map((p) => /^\s*([A-Za-z_$][\w$]*)\s*(=|$)/.exec(p)?.[1]);
}

/** `src` with the contents of strings, template literals and comments blanked out. */
function blankLiterals(src: string): string {
  let out = "";
  for (let i = 0; i < src.length; i++) {
    const c = src[i]!;
    if (c === "/" && (src[i + 1] === "/" || src[i + 1] === "*")) {
      const end = src[i + 1] === "/" ? src.indexOf("\n", i) : src.indexOf("*/", i + 2) + 2;
      const stop = end < i + 2 ? src.length : end;
      out += " ";
      i = stop - 1;
    } else if (c === '"' || c === "'" || c === "`") {
      let j = i + 1;
      while (j < src.length && src[j] !== c) j += src[j] === "\\" ? 2 : 1;
      out += c + c;
      i = j;
    } else out += c;
  }
  return out;
}
