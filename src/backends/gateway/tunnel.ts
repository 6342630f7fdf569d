/**
 * An upgrade (WebSocket) request: once connected to a replica, raw sockets piped both ways.
 */
import { STATUS_CODES } from "node:http";
import { connect } from "node:net";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { Pending, ReplicaState, Route } from "./route.ts";

const noop = () => {};

export class Tunnel implements Pending {
  private replica?: ReplicaState;
  private upstream?: Socket;
  private retried = false;
  private queued = false;
  private status = 0;

  constructor(
    private readonly route: Route,
    private readonly socket: Socket,
    private readonly head: string,
    private readonly body: Buffer,
  ) {
    socket.on("error", noop);
    socket.once("close", this.onClose);
  }

  enqueue(): void {
    this.queued = true;
    this.route.enqueue(this);
  }

  dispatch(replica: ReplicaState): void {
    this.queued = false;
    this.replica = replica;
    this.route.acquire(replica);
    replica.upgrades.add(this.socket);
    const up = connect({ host: replica.host, port: replica.port, noDelay: true });
    this.upstream = up;
    let connected = false;
    up.on("connect", () => {
      connected = true;
      up.write(this.head, "latin1");
      if (this.body.length > 0) up.write(this.body);
      // The status of the app's answer (101 or a refusal), for the stats.
      up.once("data", (chunk: Buffer) => {
        this.status = Number(chunk.subarray(9, 12).toString("latin1")) || 0;
      });
      up.pipe(this.socket);
      this.socket.pipe(up);
    });
    up.on("error", (err: NodeJS.ErrnoException) => {
      if (connected) this.socket.destroy();
      else this.connectFailed(replica, err);
    });
    up.on("close", () => {
      if (this.upstream === up && !this.socket.destroyed) this.socket.destroySoon();
    });
  }

  private connectFailed(replica: ReplicaState, err: NodeJS.ErrnoException): void {
    this.upstream = undefined;
    this.route.release(replica);
    replica.upgrades.delete(this.socket);
    this.replica = undefined;
    if (!this.retried && err.code === "ECONNREFUSED") {
      const next = this.route.pick(replica);
      if (next) {
        this.retried = true;
        this.dispatch(next);
        return;
      }
    }
    this.fail(502, `${this.route.app}: upstream failed (${err.code ?? err.message})`);
  }

  fail(status: number, message: string): void {
    this.status = status;
    rawReply(this.socket, status, `${message}\n`);
  }

  private readonly onClose = (): void => {
    if (this.queued) this.route.dequeue(this);
    this.upstream?.destroy();
    if (this.replica) {
      this.replica.upgrades.delete(this.socket);
      this.route.release(this.replica);
    }
    // Long-lived by nature: counted, but kept out of the latency histogram.
    this.route.traffic.record(this.status || 499, -1);
  };
}

/** Writes a complete HTTP response on a raw (upgrade) socket and closes it. */
export function rawReply(socket: Duplex, status: number, body: string, extra = ""): void {
  if (socket.destroyed) return;
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: text/plain; charset=utf-8\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n${extra}\r\n${body}`,
  );
}
