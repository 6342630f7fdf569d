/**
 * Readiness of a server caravan did not start itself (a server function): a TCP connect and
 * any HTTP answer on 127.0.0.1:`port`, probed fast at first (10 ms), backing off to 500 ms.
 */
import { request } from "node:http";
import { Socket } from "node:net";

function tcpOpen(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(1000, () => done(false));
    socket.once("error", () => done(false));
    socket.connect(port, host, () => done(true));
  });
}

function httpAnswers(port: number, host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host, port, path: "/", method: "GET", timeout: 2000 }, (res) => {
      res.resume();
      resolve((res.statusCode ?? 0) > 0);
    });
    req.once("timeout", () => req.destroy());
    req.once("error", () => resolve(false));
    req.end();
  });
}

/** Resolves once the port answers HTTP; `stop()` returning true ends the wait (rejecting). */
export async function waitForPort(port: number, host: string, stop: () => boolean): Promise<void> {
  let delay = 10;
  while (!stop()) {
    if ((await tcpOpen(port, host)) && (await httpAnswers(port, host))) return;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 500);
  }
  throw new Error(`stopped waiting for port ${port}`);
}
