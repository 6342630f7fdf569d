/**
 * Loopback ports for apps and their replicas. An app's two gateway ports are allocated once
 * (table `ports`) and kept until delete; each replica gets a port of its own, recorded with
 * its process once spawned. Allocation is serialised: two allocations must never pick the
 * same free port.
 */
import type { Scope } from "../contract.ts";
import { freePort } from "./os.ts";
import type { AppPorts, Store } from "./store.ts";

export class PortAllocator {
  /** Replica ports handed out and not yet seen in the store (closes an allocation race). */
  private readonly reserved = new Set<number>();
  private lock: Promise<unknown> = Promise.resolve();

  constructor(private readonly store: Store) {}

  /** The app's gateway ports: allocated once, kept across redeploys and restarts until delete. */
  appPorts(scope: Scope, name: string): Promise<AppPorts> {
    return this.allocate(async () => {
      const existing = this.store.portsOf(scope, name);
      if (existing) return existing;
      const used = this.used();
      const pub = await freePort(used);
      used.add(pub);
      const ports = { public: pub, internal: await freePort(used) };
      this.store.assignPorts(scope, name, ports);
      return ports;
    });
  }

  /** A port for a new replica (recorded with its process once spawned). */
  replicaPort(): Promise<number> {
    return this.allocate(async () => {
      const port = await freePort(this.used());
      this.reserved.add(port);
      return port;
    });
  }

  /** A replica port is free again (its process failed to start or exited). */
  release(port: number): void {
    this.reserved.delete(port);
  }

  private used(): Set<number> {
    const used = this.store.usedPorts();
    for (const p of this.reserved) used.add(p);
    return used;
  }

  private allocate<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.lock.then(fn);
    this.lock = run.catch(() => {});
    return run;
  }
}
