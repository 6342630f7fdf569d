/** Polling for what has no live stream (telemetry): the views read it again now and then. */
import { useEffect, useState } from "preact/hooks";

/** Telemetry arrives in the apps' export batches: its views read it again this often. */
const POLL_MS = 2000;

/** Reads `load` now, whenever `deps` change, and every POLL_MS. */
export function usePolled<T>(load: () => Promise<T>, deps: unknown[]) {
  const [value, setValue] = useState<T>();
  const [problem, setProblem] = useState<string>();
  useEffect(() => {
    let live = true;
    const read = () =>
      load()
        .then((v) => live && (setValue(v), setProblem(undefined)))
        .catch((e: Error) => live && setProblem(e.message));
    read();
    const timer = setInterval(read, POLL_MS);
    return () => {
      live = false;
      clearInterval(timer);
    };
  }, deps);
  return [value, problem] as const;
}
