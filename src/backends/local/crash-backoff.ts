/**
 * The crash-restart backoff of every process the local control plane keeps up — an app's
 * replica, the gateway process, the gateway's workers: the first restart after 250 ms, then
 * doubling to at most 30 s; a process that stayed up 30 s starts the count again.
 */
export const BACKOFF_FIRST_MS = 250;
export const BACKOFF_MAX_MS = 30_000;
export const STABLE_AFTER_MS = 30_000;
