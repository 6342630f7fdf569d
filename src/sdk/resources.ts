import { describeValue } from "../errors.ts";
import { fail, isPlainObject } from "./validation.ts";

/**
 * What an environment asks of the machine.
 * @example { cpu: 1, memory: "512Mi" }
 * @example { cpu: "500m", memory: "1Gi", gpu: 1 }
 */
export interface Resources {
  /** Cores, as a number (`0.5`) or a Kubernetes quantity (`"500m"`). */
  cpu?: number | string;
  /** Bytes as a quantity: `"512Mi"`, `"1Gi"`, `"1G"`, `"1000000"`. */
  memory?: string;
  /** Whole GPUs. */
  gpu?: number;
}

/** Resources in base units, for hashing and for backends. */
export interface NormalizedResources {
  milliCpu?: number;
  memoryBytes?: number;
  gpu?: number;
}

const MEMORY_UNITS: Record<string, number> = {
  "": 1,
  k: 1e3,
  K: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  Ki: 1024,
  Mi: 1024 ** 2,
  Gi: 1024 ** 3,
  Ti: 1024 ** 4,
};

export function parseCpu(cpu: unknown, where: string): number {
  if (typeof cpu === "number" && Number.isFinite(cpu) && cpu > 0) return Math.round(cpu * 1000);
  if (typeof cpu === "string") {
    const m = /^(\d+(?:\.\d+)?)(m?)$/.exec(cpu);
    if (m) {
      const milli = m[2] ? Number(m[1]) : Number(m[1]) * 1000;
      if (milli > 0) return Math.round(milli);
    }
  }
  return fail(
    "INVALID_RESOURCES",
    where,
    `resources.cpu ${describeValue(cpu)} is not a CPU quantity: use a positive number of cores (1, 0.5) or millicores ("500m")`,
    cpu,
  );
}

export function parseMemory(memory: unknown, where: string): number {
  if (typeof memory === "string") {
    const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|K|M|G|T)?$/.exec(memory);
    if (m) {
      const bytes = Number(m[1]) * (MEMORY_UNITS[m[2] ?? ""] ?? 1);
      if (bytes > 0) return Math.round(bytes);
    }
  }
  return fail(
    "INVALID_RESOURCES",
    where,
    `resources.memory ${describeValue(memory)} is not a memory quantity: use a string like "512Mi" or "1Gi"`,
    memory,
  );
}

export function normalizeResources(res: unknown, where: string): NormalizedResources | undefined {
  if (res === undefined) return undefined;
  if (!isPlainObject(res)) {
    fail(
      "INVALID_RESOURCES",
      where,
      `resources must be an object like { cpu: 1, memory: "512Mi" }, got ${describeValue(res)}`,
    );
  }
  for (const key of Object.keys(res)) {
    if (!["cpu", "memory", "gpu"].includes(key)) {
      fail(
        "INVALID_RESOURCES",
        where,
        `resources.${key} is not a resource; use cpu, memory or gpu`,
      );
    }
  }
  const out: NormalizedResources = {};
  if (res.cpu !== undefined) out.milliCpu = parseCpu(res.cpu, where);
  if (res.memory !== undefined) out.memoryBytes = parseMemory(res.memory, where);
  if (res.gpu !== undefined) {
    if (typeof res.gpu !== "number" || !Number.isInteger(res.gpu) || res.gpu < 0) {
      fail(
        "INVALID_RESOURCES",
        where,
        `resources.gpu must be a whole number of GPUs, got ${describeValue(res.gpu)}`,
        res.gpu,
      );
    }
    out.gpu = res.gpu;
  }
  return out;
}
