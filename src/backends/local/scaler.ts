/** The autoscaler's decision, as a pure function of the gateway's load view and the clock. */

export interface ScaleInput {
  /** Bounds from the app's `scaling.replicas`. */
  min: number;
  max: number;
  /** Requests one replica should handle at once (`scaling.concurrency`). */
  concurrency: number;
  /** `scaling.scaledownAfter`, in ms. */
  scaledownAfterMs: number;
  /** Replicas running now (not counting draining ones). */
  current: number;
  /** Requests in flight and requests waiting for a replica (from `Gateway.load`). */
  inFlight: number;
  waiting: number;
  /** When the app last had a request in flight, and when the replica count last changed (ms epoch). */
  lastActiveAt: number;
  lastScaleAt: number;
  now: number;
}

/**
 * How many replicas the app should have now.
 *
 * - needed = ceil((inFlight + waiting) / concurrency), and at least 1 while a request waits.
 * - Outside [min, max], the count goes straight back to the nearest bound.
 * - Scale out at once when the load exceeds what the current replicas handle
 *   (needed > current): to needed, capped at max.
 * - Scale in one replica at a time toward max(min, needed), and only once the replica count
 *   has been stable for scaledownAfterMs (now ≥ lastScaleAt + scaledownAfterMs), so a burst
 *   does not make the count flap.
 * - The last replica (going to zero, when min is 0) goes only when nothing is in flight or
 *   waiting and nothing has been for scaledownAfterMs (now ≥ lastActiveAt + scaledownAfterMs).
 *
 * The result is always within [min, max] (min is taken as at most max), so it is ≥ 1 when a
 * request waits and max ≥ 1.
 */
export function desiredReplicas(input: ScaleInput): number {
  const max = Math.max(0, Math.floor(input.max));
  const min = Math.min(Math.max(0, Math.floor(input.min)), max);
  const current = Math.max(0, Math.floor(input.current));
  const concurrency = input.concurrency >= 1 ? input.concurrency : 1;
  const waiting = Math.max(0, input.waiting);
  const load = Math.max(0, input.inFlight) + waiting;
  let needed = Math.ceil(load / concurrency);
  if (waiting > 0 && needed < 1) needed = 1;

  if (current < min) return Math.max(min, Math.min(max, needed));
  if (current > max) return max;
  if (needed > current) return Math.min(max, needed);

  const target = Math.max(min, needed);
  if (target >= current) return current;
  const after = Math.max(0, input.scaledownAfterMs);
  if (input.now < input.lastScaleAt + after) return current;
  if (current === 1) {
    // target is 0 here: min is 0 and nothing is in flight or waiting.
    if (input.now < input.lastActiveAt + after) return current;
  }
  return current - 1;
}
