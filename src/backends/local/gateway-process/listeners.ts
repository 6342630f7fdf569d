/**
 * The gateway's listening sockets, held by its primary: bound but never listened on there (so
 * the primary never accepts a connection), and given to each worker that asks (over IPC, the
 * handle attached), which listens and accepts on it. Kept open here for as long as a route
 * uses the port, so that a worker that dies, a new worker, or a successor (succession.ts)
 * finds the same socket: connections wait in its queue meanwhile, none is refused.
 */
import net from "node:net";
import { getSystemErrorName } from "node:util";

/** A libuv TCP handle: what node's own cluster gives its workers for `SCHED_NONE`. */
export interface ListenHandle {
  readonly fd: number;
  close(): void;
  /** Fills `out` with the bound address; an error code (negative) if the bind failed. */
  getsockname(out: { port?: number }): number;
}

/** node's (undocumented, stable since node 0.x) constructor of a server's handle, as node:cluster binds with. */
const createServerHandle = (
  net as unknown as {
    _createServerHandle(
      address: string | null,
      port: number | null,
      addressType: number | null,
      fd?: number,
    ): ListenHandle | number;
  }
)._createServerHandle;

const key = (host: string, port: number) => `${host}:${port}`;

export class Listeners {
  private readonly handles = new Map<
    string,
    { host: string; port: number; handle: ListenHandle }
  >();

  /** The socket for host:port: the one held, or bound now. Throws as `listen` does (EADDRINUSE). */
  get(host: string, port: number): ListenHandle {
    const held = this.handles.get(key(host, port));
    if (held) return held.handle;
    const handle = createServerHandle(host, port, net.isIPv6(host) ? 6 : 4);
    if (typeof handle === "number") {
      const code = getSystemErrorName(handle);
      throw Object.assign(new Error(`listen ${code}: ${host}:${port}`), { code });
    }
    // libuv keeps a TCP bind's failure (a port in use) for the listen, which a worker does on
    // its copy of the socket: there, unbound, it would listen on a port of the kernel's choice.
    const bound: { port?: number } = {};
    const failed = handle.getsockname(bound);
    if (failed !== 0 || (port !== 0 && bound.port !== port)) {
      handle.close();
      const code = failed !== 0 ? getSystemErrorName(failed) : "EADDRINUSE";
      throw Object.assign(new Error(`listen ${code}: ${host}:${port}`), { code });
    }
    this.handles.set(key(host, port), { host, port, handle });
    return handle;
  }

  /** A socket this process inherited as `fd` (it succeeds another gateway). */
  adopt(host: string, port: number, fd: number): void {
    const handle = createServerHandle(null, null, null, fd);
    if (typeof handle === "number")
      throw new Error(`fd ${fd} (${host}:${port}): ${getSystemErrorName(handle)}`);
    this.handles.set(key(host, port), { host, port, handle });
  }

  /** Closes the sockets on ports no route uses any more (the workers closed theirs). */
  release(inUse: Set<number>): void {
    for (const [k, held] of this.handles)
      if (!inUse.has(held.port)) {
        this.handles.delete(k);
        held.handle.close();
      }
  }

  /** Every socket held, for a successor. */
  all(): { host: string; port: number; fd: number }[] {
    return [...this.handles.values()].map((h) => ({ host: h.host, port: h.port, fd: h.handle.fd }));
  }
}
