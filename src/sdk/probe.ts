/**
 * Readiness by probing: a TCP connect, then an HTTP answer (any status, or a 2xx on `path`).
 * Used for servers caravan does not see start: command apps (by the control plane) and
 * server functions (by the runtime, inside the app).
 *
 * Schedule: every 10 ms for the first 2 s, then doubling up to 500 ms. A refused loopback
 * connect costs next to nothing, while a backoff from the start made a dependent wait up to
 * half of its dependency's start-up time again (a fan-in waits for the slowest of those).
 */
import { request } from "node:http";
import { Socket } from "node:net";

const FAST_MS = 10;
const FAST_FOR_MS = 2000;
const SLOWEST_MS = 500;

/** True when something accepts a TCP connection on host:port within `timeoutMs`. */
export function tcpOpen(port: number, host = "127.0.0.1", timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("error", () => done(false));
    socket.connect(port, host, () => done(true));
  });
}

/** One probe: a TCP connect (`tcp`), or an HTTP answer (2xx on `path` when given). */
export async function probeOnce(
  port: number,
  check: { path?: string; tcp?: boolean },
  host = "127.0.0.1",
): Promise<boolean> {
  return (await tcpOpen(port, host)) && (check.tcp === true || httpAnswers(port, host, check.path));
}

function httpAnswers(port: number, host: string, path: string | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host, port, path: path ?? "/", method: "GET", timeout: 2000 }, (res) => {
      res.resume();
      const code = res.statusCode ?? 0;
      resolve(path ? code >= 200 && code < 300 : code > 0);
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => resolve(false));
    req.end();
  });
}

/**
 * Resolves true once `port` answers (HTTP, 2xx on `path` when given; a TCP connect alone with
 * `tcpOnly`); false as soon as `stop()` says to give up (checked between probes).
 */
export async function probeHttp(
  port: number,
  opts: { host?: string; path?: string | undefined; tcpOnly?: boolean; stop: () => boolean },
): Promise<boolean> {
  const host = opts.host ?? "127.0.0.1";
  const started = Date.now();
  let delay = FAST_MS;
  while (!opts.stop()) {
    if ((await tcpOpen(port, host)) && (opts.tcpOnly || (await httpAnswers(port, host, opts.path))))
      return true;
    await new Promise((r) => setTimeout(r, delay));
    if (Date.now() - started > FAST_FOR_MS) delay = Math.min(delay * 2, SLOWEST_MS);
  }
  return false;
}

/** Resolves once the port answers HTTP; rejects when `stop()` ends the wait. */
export async function waitForPort(port: number, host: string, stop: () => boolean): Promise<void> {
  if (!(await probeHttp(port, { host, stop }))) throw new Error(`stopped waiting for port ${port}`);
}
