import Database from "better-sqlite3";
import { createServer, request } from "node:http";
import type { IncomingHttpHeaders, IncomingMessage, Server, ServerResponse } from "node:http";
import { connect, createServer as createNetServer } from "node:net";
import type { Socket } from "node:net";
import fc from "fast-check";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocket, WebSocketServer } from "ws";
import { Gateway } from "./index.ts";
import type { GatewayHooks, GatewaySpan, RouteOptions } from "./index.ts";
import { TokenStore } from "../local/tokens.ts";

const OPEN: RouteOptions = { requiresAuth: false, requestTimeoutMs: 0 };

interface Deferred<T = void> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(err: unknown): void;
}
function deferred<T = void>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  expect(cond()).toBe(true);
}

let servers: Server[] = [];
let netServers: ReturnType<typeof createNetServer>[] = [];
let sockets: Socket[] = [];
let gateways: Gateway[] = [];
let cleanups: (() => void)[] = [];

afterEach(async () => {
  for (const c of cleanups) c();
  await Promise.all(gateways.map((g) => g.closeAll()));
  await Promise.all(
    servers.map(
      (s) =>
        new Promise<void>((resolve) => {
          s.close(() => resolve());
          s.closeAllConnections();
        }),
    ),
  );
  for (const s of sockets) s.destroy();
  await Promise.all(netServers.map((s) => new Promise((r) => s.close(r))));
  servers = [];
  netServers = [];
  sockets = [];
  gateways = [];
  cleanups = [];
});

/** A replica: a loopback node:http server on a port the OS picks. */
async function upstream(
  handler: (req: IncomingMessage, res: ServerResponse) => void,
): Promise<{ server: Server; port: number }> {
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { server, port: (server.address() as { port: number }).port };
}

async function gateway(
  hooks: Partial<GatewayHooks> = {},
  options: RouteOptions = OPEN,
  app = "app",
): Promise<{ gw: Gateway; pub: number; internal: number }> {
  const gw = new Gateway({ authorize: () => false, ...hooks });
  gateways.push(gw);
  await gw.open(app, { public: 0, internal: 0 }, options);
  const { public: pub, internal } = gw.addresses(app)!;
  return { gw, pub, internal };
}

interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One request on a fresh connection (no pooling: every test closes everything it opened). */
function call(
  port: number,
  path = "/",
  opts: { method?: string; headers?: Record<string, string>; body?: string | Buffer } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: "127.0.0.1",
        port,
        path,
        method: opts.method ?? "GET",
        headers: opts.headers,
        agent: false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({
            status: res.statusCode!,
            headers: res.headers,
            body: Buffer.concat(chunks).toString(),
          }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(opts.body);
  });
}

const hello = (id: string) => (_req: IncomingMessage, res: ServerResponse) => res.end(id);

describe("Gateway: balancing", () => {
  it("spreads sequential requests over 3 replicas, round robin on ties", async () => {
    const { gw, internal } = await gateway();
    for (const id of ["a", "b", "c"]) {
      gw.addReplica("app", { id, port: (await upstream(hello(id))).port });
    }
    const seen: string[] = [];
    for (let i = 0; i < 9; i++) seen.push((await call(internal)).body);
    expect(seen.filter((s) => s === "a")).toHaveLength(3);
    expect(seen.filter((s) => s === "b")).toHaveLength(3);
    expect(seen.filter((s) => s === "c")).toHaveLength(3);
  });

  it("moves an app's listeners once when asked for the same new ports twice at once", async () => {
    const { gw, pub: oldPub } = await gateway();
    const { port } = await upstream(hello("moved"));
    gw.addReplica("app", { id: "r", port });
    // Two free ports, found by binding them.
    const free = async () => {
      const probe = createNetServer();
      await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
      const p = (probe.address() as { port: number }).port;
      await new Promise<void>((r) => probe.close(() => r()));
      return p;
    };
    const ports = { public: await free(), internal: await free() };
    // The gateway process's sync and the control plane's open of one app can cross.
    await Promise.all([gw.open("app", ports, OPEN), gw.open("app", ports, OPEN)]);
    expect(gw.addresses("app")).toEqual(ports);
    expect((await call(ports.public)).body).toBe("moved");
    await expect(call(oldPub)).rejects.toThrow(/ECONNREFUSED/);
  });

  it("forwards to a replica on another address and serves its public side where told", async () => {
    // A replica on 127.0.0.2 (a pod's address, in a cluster) and one on 127.0.0.1.
    const far = createServer(hello("far"));
    servers.push(far);
    await new Promise<void>((r) => far.listen(0, "127.0.0.2", r));
    const farPort = (far.address() as { port: number }).port;
    const gw = new Gateway({ authorize: () => false }, { publicHost: "127.0.0.3" });
    gateways.push(gw);
    await gw.open("app", { public: 0, internal: 0 }, OPEN);
    gw.addReplica("app", { id: "far", host: "127.0.0.2", port: farPort });
    const { public: pub } = gw.addresses("app")!;
    const reply = await new Promise<string>((resolve, reject) =>
      request({ host: "127.0.0.3", port: pub, agent: false }, (res) => {
        let body = "";
        res.on("data", (c) => (body += c));
        res.on("end", () => resolve(body));
      })
        .on("error", reject)
        .end(),
    );
    expect(reply).toBe("far");
    // Not on 127.0.0.1: the public listener is where it was told to be.
    await expect(call(pub)).rejects.toThrow(/ECONNREFUSED/);
  });

  it("sends new requests to the replicas with the fewest outstanding", async () => {
    const { gw, internal } = await gateway();
    const held = deferred();
    const arrived = deferred();
    gw.addReplica("app", {
      id: "slow",
      port: (
        await upstream((_req, res) => {
          arrived.resolve();
          void held.promise.then(() => res.end("slow"));
        })
      ).port,
    });
    gw.addReplica("app", { id: "fast", port: (await upstream(hello("fast"))).port });
    const first = call(internal);
    await arrived.promise;
    const next: string[] = [];
    for (let i = 0; i < 4; i++) next.push((await call(internal)).body);
    expect(next).toEqual(["fast", "fast", "fast", "fast"]);
    expect(gw.load("app").replicas).toEqual([
      { id: "slow", port: expect.any(Number), inFlight: 1 },
      { id: "fast", port: expect.any(Number), inFlight: 0 },
    ]);
    held.resolve();
    expect((await first).body).toBe("slow");
    expect(gw.load("app").inFlight).toBe(0);
  });

  it("a connection paused for a slow client is resumed before it serves the next request", async () => {
    // An app answering chunked, its last data chunk and the final 0-chunk in one write: the
    // gateway pauses the app's connection for a client write that filled up (over 16 KiB),
    // and the response ends in the same read. The connection goes back to the pool: the next
    // request on it must be read.
    const body = "x".repeat(60_000);
    const answer = Buffer.from(
      `HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`,
    );
    let connections = 0;
    const app = createNetServer((socket) => {
      connections++;
      let seen = "";
      socket.on("data", (d: Buffer) => {
        seen += d.toString("latin1");
        for (let end = seen.indexOf("\r\n\r\n"); end >= 0; end = seen.indexOf("\r\n\r\n")) {
          seen = seen.slice(end + 4);
          socket.write(answer);
        }
      });
    });
    netServers.push(app);
    await new Promise<void>((r) => app.listen(0, "127.0.0.1", r));
    const { gw, internal } = await gateway();
    gw.addReplica("app", { id: "a", port: (app.address() as { port: number }).port });
    for (let i = 0; i < 3; i++) {
      const reply = await Promise.race([
        call(internal),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error(`request ${i + 1} was never answered`)), 10_000),
        ),
      ]);
      expect(reply.body.length).toBe(body.length);
    }
    expect(connections).toBe(1);
  });

  it("reuses upstream connections (keep-alive)", async () => {
    const { gw, internal } = await gateway();
    const { server, port } = await upstream(hello("a"));
    let connections = 0;
    server.on("connection", () => connections++);
    gw.addReplica("app", { id: "a", port });
    for (let i = 0; i < 10; i++) expect((await call(internal)).body).toBe("a");
    expect(connections).toBe(1);
  });
});

describe("Gateway: auth", () => {
  function tokens(): TokenStore {
    const db = new Database(":memory:");
    cleanups.push(() => db.close());
    return new TokenStore(db);
  }

  it("401 without a valid token on the public side; internal side and requiresAuth:false are open", async () => {
    const store = tokens();
    const { gw, pub, internal } = await gateway(
      { authorize: (t, app) => store.verify(t, app), redeem: (c, app) => store.redeem(c, app) },
      { requiresAuth: true, requestTimeoutMs: 0 },
    );
    const seen: IncomingHttpHeaders[] = [];
    const { port } = await upstream((req, res) => {
      seen.push(req.headers);
      res.end("ok");
    });
    gw.addReplica("app", { id: "a", port });
    const { token, id } = store.create("ci");

    const none = await call(pub);
    expect(none.status).toBe(401);
    expect(none.headers["www-authenticate"]).toMatch(/^Bearer/);
    expect(none.body).toContain("caravan token create");
    expect((await call(pub, "/", { headers: { authorization: "Bearer cvn_nope" } })).status).toBe(
      401,
    );

    const ok = await call(pub, "/", { headers: { authorization: `Bearer ${token}` } });
    expect(ok).toMatchObject({ status: 200, body: "ok" });
    // A caravan token is for the gateway (it opens every app): the app never sees it,
    // however "Bearer" is spelt.
    expect(seen[0]!.authorization).toBeUndefined();
    const odd = await call(pub, "/", { headers: { authorization: `bEaReR  ${token}` } });
    expect(odd.status).toBe(200);
    expect(seen[1]!.authorization).toBeUndefined();
    seen.splice(1, 1);

    expect(await call(internal)).toMatchObject({ status: 200, body: "ok" });

    expect(store.revoke(id)).toBe(true);
    expect((await call(pub, "/", { headers: { authorization: `Bearer ${token}` } })).status).toBe(
      401,
    );

    gw.setOptions("app", { requiresAuth: false, requestTimeoutMs: 0 });
    expect(await call(pub)).toMatchObject({ status: 200, body: "ok" });
    expect(seen).toHaveLength(3); // no rejected request reached the app
  });

  it("refuses a request with two Authorization headers (400), on both sides", async () => {
    const store = tokens();
    const { gw, pub, internal } = await gateway(
      { authorize: (t, app) => store.verify(t, app) },
      { requiresAuth: true, requestTimeoutMs: 0 },
    );
    let reached = 0;
    const { port } = await upstream((_req, res) => {
      reached++;
      res.end("ok");
    });
    gw.addReplica("app", { id: "a", port });
    const { token } = store.create("ci");
    // node's client sends an array of values as repeated headers.
    const two = (good: string, other: string) =>
      call(pub, "/", { headers: { authorization: [good, other] as unknown as string } });
    for (const reply of [
      await two(`Bearer ${token}`, "Basic YWRtaW46YWRtaW4="),
      await two("Basic YWRtaW46YWRtaW4=", `Bearer ${token}`),
    ]) {
      expect(reply.status).toBe(400);
      expect(reply.body).toContain("more than one Authorization header");
    }
    const inside = await call(internal, "/", {
      headers: { authorization: ["Basic a", "Basic b"] as unknown as string },
    });
    expect(inside.status).toBe(400);
    expect(reached).toBe(0);
    expect((await call(pub, "/", { headers: { authorization: `Bearer ${token}` } })).status).toBe(
      200,
    );
  });

  it("sessions are per app: each sets a cookie of its own name, and no app sees any", async () => {
    const store = tokens();
    const hooks = {
      authorize: (t: string, app: string) => store.verify(t, app),
      redeem: (c: string, app: string) => store.redeem(c, app),
    };
    const gw = new Gateway(hooks);
    gateways.push(gw);
    const auth = { requiresAuth: true, requestTimeoutMs: 0 };
    await gw.open("one", { public: 0, internal: 0 }, auth);
    await gw.open("two", { public: 0, internal: 0 }, auth);
    const seen: IncomingHttpHeaders[] = [];
    const { port } = await upstream((req, res) => {
      seen.push(req.headers);
      res.end("ok");
    });
    gw.addReplica("one", { id: "a", port });
    gw.addReplica("two", { id: "b", port });
    const one = gw.addresses("one")!.public;
    const two = gw.addresses("two")!.public;
    const login = async (app: string, pub: number) =>
      (await call(pub, `/_caravan/login?code=${store.loginCode(app)}`)).headers[
        "set-cookie"
      ]![0]!.split(";")[0]!;
    const a = await login("one", one);
    const b = await login("two", two);
    expect(a.split("=")[0]).toBe(`caravan_session_${one}`);
    expect(b.split("=")[0]).toBe(`caravan_session_${two}`);
    // A browser sends both cookies of 127.0.0.1 to either port: each app's session holds.
    const jar = `${a}; theme=dark; ${b}`;
    expect((await call(one, "/", { headers: { cookie: jar } })).status).toBe(200);
    expect((await call(two, "/", { headers: { cookie: jar } })).status).toBe(200);
    expect(seen.map((h) => h.cookie)).toEqual(["theme=dark", "theme=dark"]);
    // One app's session does not open the other.
    expect((await call(two, "/", { headers: { cookie: a } })).status).toBe(401);
  });

  it("a login link sets the session cookie, which then authenticates (and is not forwarded)", async () => {
    const store = tokens();
    const { gw, pub } = await gateway(
      { authorize: (t, app) => store.verify(t, app), redeem: (c, app) => store.redeem(c, app) },
      { requiresAuth: true, requestTimeoutMs: 0 },
    );
    const seen: IncomingHttpHeaders[] = [];
    const { port } = await upstream((req, res) => {
      seen.push(req.headers);
      res.end("ok");
    });
    gw.addReplica("app", { id: "a", port });

    const code = store.loginCode("app");
    const login = await call(
      pub,
      `/_caravan/login?code=${code}&next=${encodeURIComponent("/dash?x=1")}`,
    );
    expect(login.status).toBe(302);
    expect(login.headers.location).toBe("/dash?x=1");
    const cookie = login.headers["set-cookie"]![0]!;
    expect(cookie).toMatch(
      new RegExp(`^caravan_session_${pub}=cvs_[\\w-]+; HttpOnly; SameSite=Lax; Path=/$`),
    );
    const session = cookie.split(";")[0]!;

    const ok = await call(pub, "/", { headers: { cookie: `theme=dark; ${session}; lang=en` } });
    expect(ok).toMatchObject({ status: 200, body: "ok" });
    expect(seen[0]!.cookie).toBe("theme=dark; lang=en");

    // One-time: the same code again fails; so does a made-up one.
    expect((await call(pub, `/_caravan/login?code=${code}`)).status).toBe(401);
    expect((await call(pub, "/_caravan/login?code=nope")).status).toBe(401);
    // Only local paths are redirect targets.
    const evil = await call(
      pub,
      `/_caravan/login?code=${store.loginCode("app")}&next=//evil.example`,
    );
    expect(evil).toMatchObject({ status: 302, headers: { location: "/" } });
    for (const next of ["/\\evil.example", "/café", "https://evil.example/"]) {
      const code = store.loginCode("app");
      const reply = await call(
        pub,
        `/_caravan/login?code=${code}&next=${encodeURIComponent(next)}`,
      );
      expect(reply).toMatchObject({ status: 302, headers: { location: "/" } });
    }
  });
});

describe("Gateway: forwarding", () => {
  it("adds X-Forwarded-*, drops hop-by-hop headers both ways", async () => {
    const { gw, internal } = await gateway();
    let seen: IncomingHttpHeaders = {};
    const { port } = await upstream((req, res) => {
      seen = req.headers;
      res.writeHead(200, { "keep-alive": "timeout=77", "x-app": "1", connection: "x-internal" });
      res.end("ok");
    });
    gw.addReplica("app", { id: "a", port });
    const reply = await call(internal, "/p?q=1", {
      headers: {
        host: `localhost:${internal}`,
        connection: "keep-alive, x-hop",
        "x-hop": "secret",
        "x-forwarded-for": "10.0.0.1",
        "proxy-authorization": "Basic x",
        "x-kept": "yes",
      },
    });
    expect(reply.status).toBe(200);
    expect(seen).toMatchObject({
      host: `localhost:${internal}`,
      "x-forwarded-for": "10.0.0.1, 127.0.0.1",
      "x-forwarded-proto": "http",
      "x-forwarded-host": `localhost:${internal}`,
      "x-kept": "yes",
    });
    expect(seen["x-hop"]).toBeUndefined();
    expect(seen["proxy-authorization"]).toBeUndefined();
    expect(reply.headers["x-app"]).toBe("1");
    expect(reply.headers["keep-alive"]).not.toBe("timeout=77");
  });

  it("replaces a client's X-Forwarded-Proto and -Host on the public side, keeps a caller's on the internal one", async () => {
    const { gw, pub, internal } = await gateway(undefined, {
      requiresAuth: false,
      requestTimeoutMs: 0,
    });
    const seen: IncomingHttpHeaders[] = [];
    const { port } = await upstream((req, res) => {
      seen.push(req.headers);
      res.end("ok");
    });
    gw.addReplica("app", { id: "a", port });
    const spoofed = {
      host: "example.test",
      "x-forwarded-proto": "https",
      "x-forwarded-host": "bank.example",
    };
    expect((await call(pub, "/", { headers: spoofed })).status).toBe(200);
    expect(
      (await call(internal, "/", { headers: { ...spoofed, host: `127.0.0.1:${internal}` } }))
        .status,
    ).toBe(200);
    expect(seen[0]).toMatchObject({
      "x-forwarded-proto": "http",
      "x-forwarded-host": "example.test",
    });
    expect(seen[1]).toMatchObject({
      "x-forwarded-proto": "https",
      "x-forwarded-host": "bank.example",
    });
  });

  it("replaces a client's X-Forwarded-For on the public side, appends to a caller's on the internal one", async () => {
    const { gw, pub, internal } = await gateway();
    const seen: IncomingHttpHeaders[] = [];
    const { port } = await upstream((req, res) => {
      seen.push(req.headers);
      res.end("ok");
    });
    gw.addReplica("app", { id: "a", port });
    const spoofed = { "x-forwarded-for": "10.9.9.9" };
    expect((await call(pub, "/", { headers: spoofed })).status).toBe(200);
    expect((await call(internal, "/", { headers: spoofed })).status).toBe(200);
    expect(seen[0]!["x-forwarded-for"]).toBe("127.0.0.1");
    expect(seen[1]!["x-forwarded-for"]).toBe("10.9.9.9, 127.0.0.1");
  });

  it("the internal side answers only to loopback Host names with its port (DNS rebinding): 421 otherwise", async () => {
    const { gw, pub, internal } = await gateway();
    let reached = 0;
    const { port } = await upstream((_req, res) => {
      reached++;
      res.end("ok");
    });
    gw.addReplica("app", { id: "a", port });
    for (const host of [`127.0.0.1:${internal}`, `localhost:${internal}`, `[::1]:${internal}`])
      expect((await call(internal, "/", { headers: { host } })).status, host).toBe(200);
    for (const host of [`evil.example:${internal}`, "localhost", `127.0.0.1:${internal + 1}`]) {
      const reply = await call(internal, "/", { headers: { host } });
      expect(reply.status, host).toBe(421);
      expect(reply.body).toContain(`answers only to Host 127.0.0.1:${internal}`);
    }
    // An upgrade is refused the same way.
    const upgrade = await call(internal, "/", {
      headers: { host: `evil.example:${internal}`, connection: "upgrade", upgrade: "websocket" },
    }).catch(() => ({ status: 0 }));
    expect([0, 421]).toContain(upgrade.status);
    // The public side is for any name (it is what a proxy or a browser reaches).
    expect((await call(pub, "/", { headers: { host: "app.example" } })).status).toBe(200);
    expect(reached).toBe(4);
  });

  it("streams request bodies to the app and back", async () => {
    const { gw, internal } = await gateway();
    const { port } = await upstream((req, res) => req.pipe(res));
    gw.addReplica("app", { id: "a", port });
    const body = Buffer.alloc(2 * 1024 * 1024, "x");
    const reply = await call(internal, "/", { method: "POST", body });
    expect(reply.status).toBe(200);
    expect(reply.body.length).toBe(body.length);
  });

  it("relays server-sent events as they come (no buffering)", async () => {
    const { gw, internal } = await gateway();
    const firstSeen = deferred();
    const { port } = await upstream((_req, res) => {
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      res.write("data: one\n\n");
      // The second event is sent only once the client has read the first through the gateway.
      void firstSeen.promise.then(() => res.end("data: two\n\n"));
    });
    gw.addReplica("app", { id: "a", port });
    const events: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port: internal, agent: false }, (res) => {
        expect(res.headers["content-type"]).toBe("text/event-stream");
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (chunk: string) => {
          buf += chunk;
          for (let i; (i = buf.indexOf("\n\n")) >= 0; buf = buf.slice(i + 2)) {
            events.push(buf.slice(0, i));
            if (events.length === 1) firstSeen.resolve();
          }
        });
        res.on("end", resolve);
      });
      req.on("error", reject);
      req.end();
    });
    expect(events).toEqual(["data: one", "data: two"]);
  });

  it("aborts the upstream request when the client goes away", async () => {
    const { gw, internal } = await gateway();
    const arrived = deferred();
    const upstreamClosed = deferred();
    const { port } = await upstream((_req, res) => {
      res.on("close", () => upstreamClosed.resolve());
      arrived.resolve();
    });
    gw.addReplica("app", { id: "a", port });
    const socket = connect(internal, "127.0.0.1");
    socket.on("error", () => {});
    socket.write(`GET /long HTTP/1.1\r\nHost: 127.0.0.1:${internal}\r\n\r\n`);
    await arrived.promise;
    expect(gw.load("app").inFlight).toBe(1);
    socket.destroy();
    await upstreamClosed.promise;
    await until(() => gw.load("app").inFlight === 0);
    expect(gw.stats("app").requests).toBe(1);
  });
});

describe("Gateway: errors", () => {
  it("504 when the app does not start answering in time, and the app's request is aborted", async () => {
    const { gw, internal } = await gateway({}, { requiresAuth: false, requestTimeoutMs: 50 });
    const upstreamClosed = deferred();
    const { port } = await upstream((_req, res) => res.on("close", () => upstreamClosed.resolve()));
    gw.addReplica("app", { id: "a", port });
    const reply = await call(internal);
    expect(reply.status).toBe(504);
    expect(reply.body).toMatch(/^app: /);
    await upstreamClosed.promise;
    expect(gw.stats("app")).toMatchObject({ requests: 1, errors: 1 });
  });

  it("does not cut a response that started streaming before the timeout", async () => {
    const { gw, internal } = await gateway({}, { requiresAuth: false, requestTimeoutMs: 30 });
    const { port } = await upstream((_req, res) => {
      res.write("start ");
      setTimeout(() => res.end("end"), 100);
    });
    gw.addReplica("app", { id: "a", port });
    expect(await call(internal)).toMatchObject({ status: 200, body: "start end" });
  });

  it("503 naming the app when there is no replica and no wake hook", async () => {
    const { internal } = await gateway();
    const reply = await call(internal);
    expect(reply.status).toBe(503);
    expect(reply.body).toBe("app: no replica is ready\n");
  });

  it("retries an idempotent request refused by a dead replica on another; 502 otherwise", async () => {
    const { gw, internal } = await gateway();
    const dead = await upstream(hello("dead"));
    await new Promise<void>((r) => dead.server.close(() => r()));
    gw.addReplica("app", { id: "dead", port: dead.port });
    gw.addReplica("app", { id: "live", port: (await upstream(hello("live"))).port });
    for (let i = 0; i < 4; i++)
      expect(await call(internal)).toMatchObject({ status: 200, body: "live" });

    gw.addReplica("app", { id: "dead2", port: dead.port });
    await gw.drain("app", "live", 0);
    const post = await call(internal, "/", { method: "POST", body: "x" });
    expect(post.status).toBe(502);
    expect(post.body).toMatch(/^app: upstream failed \(ECONNREFUSED\)/);
  });
});

describe("Gateway: drain", () => {
  it("waits for an in-flight request, then resolves; new requests go elsewhere", async () => {
    const { gw, internal } = await gateway();
    const held = deferred();
    const arrived = deferred();
    gw.addReplica("app", {
      id: "old",
      port: (
        await upstream((_req, res) => {
          arrived.resolve();
          void held.promise.then(() => res.end("old"));
        })
      ).port,
    });
    const inflight = call(internal);
    await arrived.promise;
    gw.addReplica("app", { id: "new", port: (await upstream(hello("new"))).port });

    let drained = false;
    const drain = gw.drain("app", "old", 60_000).then(() => (drained = true));
    expect((await call(internal)).body).toBe("new");
    expect((await call(internal)).body).toBe("new");
    expect(drained).toBe(false);
    expect(gw.load("app")).toMatchObject({ inFlight: 1, draining: 1, replicas: [{ id: "new" }] });

    held.resolve();
    expect((await inflight).body).toBe("old");
    await drain;
    expect(gw.load("app")).toMatchObject({ inFlight: 0, draining: 0 });
  });

  it("cuts what is still in flight after the grace period", async () => {
    const { gw, internal } = await gateway();
    const arrived = deferred();
    gw.addReplica("app", { id: "a", port: (await upstream(() => arrived.resolve())).port });
    const inflight = call(internal).catch((err: Error) => err);
    await arrived.promise;
    await gw.drain("app", "a", 20);
    const outcome = await inflight;
    // The response had not started: the gateway answers 502.
    expect(outcome).toMatchObject({ status: 502 });
  });
});

describe("Gateway: wake", () => {
  it("queues requests while the app starts, calls wake once, serves them once a replica is added", async () => {
    const started = deferred();
    let wakes = 0;
    const { gw, internal } = await gateway({
      wake: (app) => {
        expect(app).toBe("app");
        wakes++;
        return started.promise;
      },
    });
    const replies = [call(internal, "/1"), call(internal, "/2")];
    await until(() => gw.load("app").waiting === 2);
    expect(wakes).toBe(1);

    const { port } = await upstream((req, res) => res.end(`served ${req.url}`));
    gw.addReplica("app", { id: "a", port });
    started.resolve();
    expect((await Promise.all(replies)).map((r) => r.body)).toEqual(["served /1", "served /2"]);
    expect(gw.load("app").waiting).toBe(0);
    expect(wakes).toBe(1);
  });

  it("answers 503 with the hook's message when the app cannot start", async () => {
    const { gw, internal } = await gateway({
      wake: () => Promise.reject(new Error("start timed out after 30 s")),
    });
    const reply = await call(internal);
    expect(reply).toMatchObject({
      status: 503,
      body: "app: could not start: start timed out after 30 s\n",
    });
    expect(gw.load("app").waiting).toBe(0);
  });

  it("drops a waiting request whose client went away", async () => {
    const started = deferred();
    const { gw, internal } = await gateway({ wake: () => started.promise });
    const socket = connect(internal, "127.0.0.1");
    socket.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${internal}\r\n\r\n`);
    await until(() => gw.load("app").waiting === 1);
    socket.destroy();
    await until(() => gw.load("app").waiting === 0);
    started.resolve();
  });
});

describe("Gateway: WebSocket", () => {
  it("echoes through the gateway, counts the connection in flight, and checks auth", async () => {
    const { gw, pub } = await gateway(
      { authorize: (t) => t === "cvn_good" },
      { requiresAuth: true, requestTimeoutMs: 0 },
    );
    const { server, port } = await upstream((_req, res) => res.end("http"));
    const wss = new WebSocketServer({ server });
    cleanups.push(() => wss.close());
    wss.on("connection", (ws) => ws.on("message", (data, binary) => ws.send(data, { binary })));
    gw.addReplica("app", { id: "a", port });

    const denied = new WebSocket(`ws://127.0.0.1:${pub}/ws`);
    denied.on("error", () => {});
    const status = await new Promise<number>((resolve) =>
      denied.on("unexpected-response", (req, res) => {
        resolve(res.statusCode!);
        req.destroy();
      }),
    );
    expect(status).toBe(401);

    const ws = new WebSocket(`ws://127.0.0.1:${pub}/ws`, {
      headers: { authorization: "Bearer cvn_good" },
    });
    await new Promise((resolve, reject) => ws.on("open", resolve).on("error", reject));
    expect(gw.load("app").inFlight).toBe(1);
    const echoed = new Promise<string>((resolve) => ws.once("message", (d) => resolve(String(d))));
    ws.send("hello through the gateway");
    expect(await echoed).toBe("hello through the gateway");
    const closed = new Promise((resolve) => ws.on("close", resolve));
    ws.close();
    await closed;
    await until(() => gw.load("app").inFlight === 0);
  });
});

describe("Gateway: WebSocket and drain", () => {
  async function echoReplica(gw: Gateway, id: string): Promise<void> {
    const { server, port } = await upstream((_req, res) => res.end("http"));
    const wss = new WebSocketServer({ server });
    cleanups.push(() => wss.close());
    wss.on("connection", (ws) => ws.on("message", (data) => ws.send(data)));
    gw.addReplica("app", { id, port });
  }
  async function open(port: number): Promise<WebSocket> {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    cleanups.push(() => ws.terminate());
    await new Promise((resolve, reject) => ws.on("open", resolve).on("error", reject));
    return ws;
  }

  it("drain waits for an open WebSocket to close", async () => {
    const { gw, internal } = await gateway();
    await echoReplica(gw, "a");
    const ws = await open(internal);
    let drained = false;
    const drain = gw.drain("app", "a", 60_000).then(() => (drained = true));
    // Still usable while draining.
    const echoed = new Promise<string>((resolve) => ws.once("message", (d) => resolve(String(d))));
    ws.send("ping");
    expect(await echoed).toBe("ping");
    expect(drained).toBe(false);
    ws.close();
    await drain;
    expect(gw.load("app")).toMatchObject({ inFlight: 0, draining: 0 });
  });

  it("drain cuts a WebSocket still open after the grace period", async () => {
    const { gw, internal } = await gateway();
    await echoReplica(gw, "a");
    const ws = await open(internal);
    const closed = new Promise((resolve) => ws.on("close", resolve));
    await gw.drain("app", "a", 20);
    await closed;
    await until(() => gw.load("app").inFlight === 0);
  });
});

describe("Gateway: stats and metrics", () => {
  it("counts requests by status class, errors, latency; exposes Prometheus text", async () => {
    const { gw, internal } = await gateway();
    const { port } = await upstream((req, res) => {
      res.statusCode = req.url === "/boom" ? 500 : 200;
      res.end();
    });
    gw.addReplica("app", { id: "a", port });
    await call(internal);
    await call(internal);
    await call(internal, "/boom");
    await until(() => gw.stats("app").requests === 3);
    const stats = gw.stats("app");
    expect(stats).toMatchObject({ requests: 3, errors: 1, latency: { count: 3 } });
    expect(stats.latency.p50).toBeGreaterThan(0);
    expect(stats.latency.p99).toBeGreaterThanOrEqual(stats.latency.p50);
    const text = gw.metrics();
    expect(text).toContain('caravan_gateway_requests_total{app="app",code="2xx"} 2');
    expect(text).toContain('caravan_gateway_requests_total{app="app",code="5xx"} 1');
    expect(text).toContain(
      'caravan_gateway_request_duration_seconds_bucket{app="app",le="+Inf"} 3',
    );
    expect(text).toContain('caravan_gateway_in_flight{app="app"} 0');
    expect(text).toContain('caravan_gateway_replicas{app="app"} 1');
    expect(text).toContain("# TYPE caravan_gateway_request_duration_seconds histogram");
  });

  it("closes a listener that was never listened on (a standby worker's) too: its owner hears 'close'", async () => {
    const held: Server[] = [];
    // As a standby worker's hook does: the server is given its port, but does not listen yet.
    const gw = new Gateway(
      { authorize: () => false },
      { listen: (server, port) => (held.push(server), Promise.resolve(port)) },
    );
    gateways.push(gw);
    await gw.open("app", { public: 41001, internal: 41002 }, OPEN);
    expect(held.map((s) => s.listening)).toEqual([false, false]);
    const closed = held.map((s) => new Promise<void>((r) => s.once("close", () => r())));
    await gw.close("app");
    await Promise.all(closed);
  });

  it("open is idempotent for the same ports and close stops listening", async () => {
    const { gw, pub, internal } = await gateway();
    gw.addReplica("app", { id: "a", port: (await upstream(hello("a"))).port });
    // Same ports, new options: the listeners stay, the options change (no timing involved:
    // a 5 ms request timeout here once made the call below a 504 on a loaded machine).
    await gw.open("app", { public: 0, internal: 0 }, { requiresAuth: true, requestTimeoutMs: 0 });
    expect(gw.addresses("app")).toEqual({ public: pub, internal });
    expect((await call(internal)).body).toBe("a");
    expect((await call(pub)).status).toBe(401);
    await gw.close("app");
    await expect(call(internal)).rejects.toMatchObject({ code: "ECONNREFUSED" });
    expect(gw.load("app").replicas).toEqual([]);
  });
});

describe("Gateway: traces", () => {
  const CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c";
  const CLIENT_SPAN = "b7ad6b7169203331";
  const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/;

  /** A traced gateway whose replica answers with the traceparent it got. */
  async function traced(options: RouteOptions = OPEN, hooks: Partial<GatewayHooks> = {}) {
    const spans: { app: string; span: GatewaySpan }[] = [];
    const { gw, pub, internal } = await gateway(
      { recordSpan: (app, span) => spans.push({ app, span }), ...hooks },
      options,
    );
    const echo = await upstream((req, res) => {
      req.resume();
      req.on("end", () => res.end(req.headers.traceparent ?? "none"));
    });
    return { gw, pub, internal, spans, replicaPort: echo.port };
  }

  it("continues the client's trace on both client paths: the app's parent is the gateway's span", async () => {
    const { gw, pub, internal, spans, replicaPort } = await traced();
    gw.addReplica("app", { id: "r1", port: replicaPort });
    const traceparent = `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01`;
    // A plain GET (the fast path) on the internal side, a POST with a body (node's) on the public.
    const get = await call(internal, "/items/7?x=1", { headers: { traceparent } });
    const post = await call(pub, "/items", { method: "POST", headers: { traceparent }, body: "b" });
    await until(() => spans.length === 2);
    for (const [reply, { app, span }, method, path, endpoint] of [
      [get, spans[0]!, "GET", "/items/7", "internal"],
      [post, spans[1]!, "POST", "/items", "public"],
    ] as const) {
      const [, traceId, parent] = TRACEPARENT.exec(reply.body)!;
      expect(traceId).toBe(CLIENT_TRACE);
      expect(app).toBe("app");
      expect(span).toMatchObject({
        traceId: CLIENT_TRACE,
        spanId: parent,
        parentSpanId: CLIENT_SPAN,
        name: `gateway ${method} ${path}`,
        kind: 2,
        status: 0,
        attributes: {
          "caravan.endpoint": endpoint,
          "caravan.replica": "r1",
          "http.request.method": method,
          "url.path": path,
          "http.response.status_code": 200,
        },
      });
      expect(span.endUs).toBeGreaterThanOrEqual(span.startUs);
    }
    expect(spans[0]!.span.spanId).not.toBe(spans[1]!.span.spanId);
  });

  it("starts a trace when the client sent none (or an invalid one)", async () => {
    const { gw, internal, spans, replicaPort } = await traced();
    gw.addReplica("app", { id: "r1", port: replicaPort });
    const first = await call(internal);
    const second = await call(internal, "/", { headers: { traceparent: "00-zz-bad-01" } });
    await until(() => spans.length === 2);
    const ids = [first, second].map((r) => TRACEPARENT.exec(r.body)!);
    expect(ids[0]![1]).not.toBe(ids[1]![1]);
    for (let i = 0; i < 2; i++) {
      expect(spans[i]!.span).toMatchObject({
        traceId: ids[i]![1],
        spanId: ids[i]![2],
        parentSpanId: null,
      });
    }
  });

  it("tracing: false, or no hook: no span, and the client's traceparent (if any) passes as it came", async () => {
    const traceparent = `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01`;
    const off = await traced({ ...OPEN, tracing: false });
    off.gw.addReplica("app", { id: "r1", port: off.replicaPort });
    expect((await call(off.internal)).body).toBe("none");
    expect((await call(off.internal, "/", { headers: { traceparent } })).body).toBe(traceparent);
    const post = await call(off.pub, "/", { method: "POST", headers: { traceparent }, body: "b" });
    expect(post.body).toBe(traceparent);

    const { gw, internal } = await gateway();
    gw.addReplica("app", { id: "r1", port: off.replicaPort });
    expect((await call(internal)).body).toBe("none");
    expect((await call(internal, "/", { headers: { traceparent } })).body).toBe(traceparent);
    // Turned on again: the next request is traced.
    off.gw.setOptions("app", OPEN);
    await call(off.internal);
    await until(() => off.spans.length === 1);
    expect(off.spans).toHaveLength(1);
  });

  it("spends the span budget as requests are read: past it a request goes untraced; one not forwarded (a 401) gives its share back", async () => {
    let left = 1;
    const asked: string[] = [];
    const spanBudget = {
      take: () => {
        const ok = left > 0;
        if (ok) left--;
        asked.push(`take:${ok}`);
        return ok;
      },
      give: (wasTraced: boolean) => {
        asked.push(`give:${wasTraced}`);
        if (wasTraced) left++;
      },
    };
    const { gw, internal, pub, spans, replicaPort } = await traced(
      { requiresAuth: true, requestTimeoutMs: 0 },
      { spanBudget, authorize: (token) => token === "good" },
    );
    gw.addReplica("app", { id: "r1", port: replicaPort });
    const traceparent = `00-${CLIENT_TRACE}-${CLIENT_SPAN}-01`;
    // Refused on the fast path, then by node's: each gives back what it took.
    expect((await call(pub, "/", { headers: { traceparent } })).status).toBe(401);
    const first = await call(internal, "/", { headers: { traceparent } });
    expect(TRACEPARENT.exec(first.body)![2]).not.toBe(CLIENT_SPAN);
    // Over budget: the header as it came, no ids made, no span, on both client paths.
    expect((await call(internal, "/", { headers: { traceparent } })).body).toBe(traceparent);
    expect((await call(internal)).body).toBe("none");
    const post = await call(pub, "/", {
      method: "POST",
      headers: { traceparent, authorization: "Bearer good" },
      body: "b",
    });
    expect(post.body).toBe(traceparent);
    expect((await call(pub)).status).toBe(401);
    await until(() => spans.length === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(spans).toHaveLength(1);
    expect(asked).toEqual([
      ...["take:true", "give:true", "take:true", "give:true"],
      "take:true",
      "take:false",
      "take:false",
      "take:false",
      ...["take:false", "give:false", "take:false", "give:false"],
    ]);
  });

  it("a request that waited for a wake-up says how long; 5xx answers are errors", async () => {
    const started = deferred();
    const { gw, internal, spans, replicaPort } = await traced(OPEN, {
      wake: () => started.promise,
    });
    const reply = call(internal, "/cold");
    await until(() => gw.load("app").waiting === 1);
    gw.addReplica("app", { id: "r1", port: replicaPort });
    started.resolve();
    expect((await reply).status).toBe(200);
    await until(() => spans.length === 1);
    expect(spans[0]!.span.attributes["caravan.gateway.wait_ms"]).toEqual(expect.any(Number));

    // The replica is gone: refused, and no other to retry on.
    const dead = await upstream(hello("dead"));
    await new Promise<void>((r) => dead.server.close(() => r()));
    await gw.drain("app", "r1", 0);
    gw.addReplica("app", { id: "dead", port: dead.port });
    expect((await call(internal, "/gone")).status).toBe(502);
    await until(() => spans.length === 2);
    expect(spans[1]!.span).toMatchObject({
      name: "gateway GET /gone",
      status: 2,
      statusMessage: "app: upstream failed (ECONNREFUSED)",
      attributes: { "http.response.status_code": 502, "caravan.replica": "dead" },
    });
    expect(spans[1]!.span.attributes).not.toHaveProperty("caravan.gateway.wait_ms");
  });
});

/**
 * A replica speaking raw HTTP/1.1: `respond` gets each request head (and the request's index
 * on its connection) and writes whatever bytes it wants.
 */
async function rawUpstream(
  respond: (socket: Socket, head: string, nth: number) => unknown,
): Promise<{ port: number; connections: () => number }> {
  let connections = 0;
  const server = createNetServer((socket) => {
    connections++;
    sockets.push(socket);
    socket.on("error", () => {});
    let buf = "";
    let nth = 0;
    socket.on("data", (d: Buffer) => {
      buf += d.toString("latin1");
      for (let i; (i = buf.indexOf("\r\n\r\n")) >= 0;) {
        const head = buf.slice(0, i);
        buf = buf.slice(i + 4);
        void respond(socket, head, nth++);
      }
    });
  });
  netServers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return { port: (server.address() as { port: number }).port, connections: () => connections };
}

/** Writes `bytes` in pieces of `size`, yielding between them (the reader sees split reads). */
async function dribble(socket: Socket, bytes: string, size: number): Promise<void> {
  for (let i = 0; i < bytes.length; i += size) {
    socket.write(bytes.slice(i, i + size), "latin1");
    await new Promise((r) => setImmediate(r));
  }
}

describe("Gateway: reading the app's responses", () => {
  const cases: [string, string, { status: number; body: string; header?: [string, string] }][] = [
    [
      "chunked, with extensions and trailers",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
      { status: 200, body: "hello world", header: ["x-a", "1"] },
    ],
    [
      "an interim 103 before the response",
      "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
      { status: 201, body: "ok" },
    ],
    [
      "204 without a body",
      "HTTP/1.1 204 No Content\r\nX-A: 2\r\n\r\n",
      { status: 204, body: "", header: ["x-a", "2"] },
    ],
    [
      "a custom reason phrase and a header with an empty value",
      "HTTP/1.1 200 Fine Thanks\r\nX-Empty:\r\nContent-Length: 3\r\n\r\nabc",
      { status: 200, body: "abc", header: ["x-empty", ""] },
    ],
  ];
  for (const [what, response, expected] of cases) {
    for (const size of [1, 7, 100_000]) {
      it(`${what} (written ${size === 100_000 ? "at once" : `in ${size}-byte pieces`}), keeping the connection`, async () => {
        const { gw, internal } = await gateway();
        const up = await rawUpstream((socket) => dribble(socket, response, size));
        gw.addReplica("app", { id: "a", port: up.port });
        for (let i = 0; i < 2; i++) {
          const reply = await call(internal);
          expect(reply).toMatchObject({ status: expected.status, body: expected.body });
          if (expected.header) expect(reply.headers[expected.header[0]]).toBe(expected.header[1]);
          expect(reply.headers["x-trailer"]).toBeUndefined();
        }
        expect(up.connections()).toBe(1);
      });
    }
  }

  it("reads a body delimited by the connection's end (HTTP/1.0), then uses a new connection", async () => {
    const { gw, internal } = await gateway();
    const up = await rawUpstream(async (socket) => {
      await dribble(socket, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end", 5);
      socket.end();
    });
    gw.addReplica("app", { id: "a", port: up.port });
    expect(await call(internal)).toMatchObject({ status: 200, body: "until the end" });
    expect(await call(internal)).toMatchObject({ status: 200, body: "until the end" });
    expect(up.connections()).toBe(2);
  });

  it("answers HEAD without waiting for a body, and the connection stays usable", async () => {
    const { gw, internal } = await gateway();
    const up = await rawUpstream((socket, head) => {
      const body = head.startsWith("HEAD") ? "" : "0123456789";
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n${body}`);
    });
    gw.addReplica("app", { id: "a", port: up.port });
    const head = await call(internal, "/", { method: "HEAD" });
    expect(head).toMatchObject({ status: 200, body: "", headers: { "content-length": "10" } });
    expect(await call(internal)).toMatchObject({ status: 200, body: "0123456789" });
    expect(up.connections()).toBe(1);
  });

  it("opens a new connection after the app says Connection: close", async () => {
    const { gw, internal } = await gateway();
    const up = await rawUpstream((socket) =>
      socket.end("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
    );
    gw.addReplica("app", { id: "a", port: up.port });
    expect((await call(internal)).body).toBe("ok");
    expect((await call(internal)).body).toBe("ok");
    expect(up.connections()).toBe(2);
  });

  it("502 on a malformed response, or one with both Content-Length and Transfer-Encoding", async () => {
    for (const bad of [
      "HTTP/1.1 2OO OK\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
      "SSH-2.0-OpenSSH\r\n\r\n",
    ]) {
      const { gw, internal } = await gateway();
      const up = await rawUpstream((socket) => socket.write(bad));
      gw.addReplica("app", { id: "a", port: up.port });
      const reply = await call(internal, "/", { method: "POST", body: "x" }).catch((e: Error) => e);
      if (bad.includes("zz")) {
        // The head was taken already: the client's response is cut short.
        expect(reply).toMatchObject({ message: "socket hang up" });
      } else {
        expect(reply).toMatchObject({ status: 502 });
        expect((reply as Reply).body).toMatch(/^app: upstream failed \(EPROTO\)/);
      }
    }
  });

  it("retries a GET when a reused keep-alive connection is closed under it", async () => {
    const { gw, internal } = await gateway();
    const up = await rawUpstream((socket, _head, nth) => {
      // The second request on a connection finds it closed, before any byte of a response.
      if (nth === 1) socket.destroy();
      else socket.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    });
    gw.addReplica("app", { id: "a", port: up.port });
    expect((await call(internal)).body).toBe("ok");
    expect((await call(internal)).body).toBe("ok");
    expect(up.connections()).toBe(2);
  });

  it("relays a large response to a slow reader (backpressure) intact", async () => {
    const { gw, internal } = await gateway();
    const big = Buffer.alloc(8 * 1024 * 1024);
    for (let i = 0; i < big.length; i++) big[i] = i % 251;
    const { port } = await upstream((_req, res) => res.end(big));
    gw.addReplica("app", { id: "a", port });
    const received = await new Promise<Buffer>((resolve, reject) => {
      const req = request({ host: "127.0.0.1", port: internal, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => {
          chunks.push(c);
          // Read slowly at first, so the gateway has to pause the app's connection.
          if (chunks.length < 20) {
            res.pause();
            setTimeout(() => res.resume(), 2);
          }
        });
        res.on("end", () => resolve(Buffer.concat(chunks)));
        res.on("error", reject);
      });
      req.on("error", reject);
      req.end();
    });
    expect(received.length).toBe(big.length);
    expect(received.equals(big)).toBe(true);
  });

  it("forwards a chunked request body (chunked again) and a HEAD/GET without one", async () => {
    const { gw, internal } = await gateway();
    const seen: { te?: string; cl?: string }[] = [];
    const { port } = await upstream((req, res) => {
      seen.push({ te: req.headers["transfer-encoding"], cl: req.headers["content-length"] });
      req.pipe(res);
    });
    gw.addReplica("app", { id: "a", port });
    const reply = await new Promise<string>((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port: internal, method: "POST", agent: false },
        (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (d: string) => (body += d));
          res.on("end", () => resolve(body));
        },
      );
      req.on("error", reject);
      req.write("part one, ");
      setTimeout(() => req.end("part two"), 5);
    });
    expect(reply).toBe("part one, part two");
    expect(seen[0]).toEqual({ te: "chunked", cl: undefined });
  });
});

/** Writes `parts` on one connection (each in its own write) and reads until `done(text)`. */
async function raw(
  port: number,
  parts: string[],
  done: (text: string) => boolean,
): Promise<string> {
  const socket = connect(port, "127.0.0.1");
  sockets.push(socket);
  socket.setNoDelay(true);
  let text = "";
  const finished = new Promise<string>((resolve, reject) => {
    socket.on("data", (d: Buffer) => {
      text += d.toString("latin1");
      if (done(text)) resolve(text);
    });
    socket.on("error", reject);
    socket.on("close", () => resolve(text));
  });
  await new Promise((r) => socket.once("connect", r));
  for (const p of parts) {
    socket.write(p, "latin1");
    await new Promise((r) => setTimeout(r, 1));
  }
  return finished;
}

/** The bodies of the Content-Length-framed responses in `text`, in order. */
function bodies(text: string): string[] {
  const out: string[] = [];
  const re = /HTTP\/1\.1 \d{3}[^\r]*\r\n((?:[^\r]+\r\n)*)\r\n/g;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    const length = Number(/content-length: (\d+)/i.exec(m[1]!)?.[1] ?? -1);
    out.push(text.slice(re.lastIndex, re.lastIndex + length));
    re.lastIndex += length;
  }
  return out;
}

const echo = (req: IncomingMessage, res: ServerResponse) => {
  let body = "";
  req.on("data", (d: Buffer) => (body += d.toString()));
  req.on("end", () => {
    const text = `${req.method} ${req.url} ${req.headers["x-a"] ?? ""} ${body}`;
    res.writeHead(200, { "content-length": Buffer.byteLength(text) });
    res.end(text);
  });
};

describe("Gateway: requests it reads itself", () => {
  it("answers a request split at any byte boundaries as when it comes whole", async () => {
    const { gw, internal } = await gateway();
    gw.addReplica("app", { id: "a", port: (await upstream(echo)).port });
    const request = `GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:${internal}\r\nX-A:  b c \r\n\r\n`;
    const answered = (t: string) => bodies(t).length === 1 && bodies(t)[0]!.length > 0;
    const whole = bodies(await raw(internal, [request], answered));
    expect(whole).toEqual(["GET /x?y=1 b c "]);
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 1, max: request.length - 1 }), { maxLength: 6 }),
        async (cuts) => {
          const points = [0, ...cuts.sort((a, b) => a - b), request.length];
          const parts = points.slice(1).map((p, i) => request.slice(points[i], p));
          expect(bodies(await raw(internal, parts, answered))).toEqual(whole);
        },
      ),
      { numRuns: 15 },
    );
  });

  it("serves pipelined requests in order, and a request with a body after them on the same connection", async () => {
    const { gw, internal } = await gateway();
    gw.addReplica("app", { id: "a", port: (await upstream(echo)).port });
    const host = `Host: 127.0.0.1:${internal}\r\n`;
    const text = await raw(
      internal,
      [
        `GET /1 HTTP/1.1\r\n${host}\r\nGET /2 HTTP/1.1\r\n${host}X-A: two\r\n\r\n`,
        `POST /3 HTTP/1.1\r\n${host}Content-Length: 3\r\n\r\nabc`,
        `GET /4 HTTP/1.1\r\n${host}\r\n`,
      ],
      (t) => bodies(t).length === 4 && bodies(t)[3]!.length > 0,
    );
    expect(bodies(text)).toEqual(["GET /1  ", "GET /2 two ", "POST /3  abc", "GET /4  "]);
    expect(gw.stats("app").requests).toBe(4);
  });

  it("frames a response of unknown length in chunks, sends no body to HEAD, closes when asked", async () => {
    const { gw, internal } = await gateway();
    gw.addReplica("app", {
      id: "a",
      port: (
        await upstream((_req, res) => {
          res.write("part one, ");
          res.end("part two");
        })
      ).port,
    });
    const chunked = await call(internal);
    expect(chunked.headers["transfer-encoding"]).toBe("chunked");
    expect(chunked.body).toBe("part one, part two");
    expect(chunked.headers.date).toBeDefined();
    const head = await call(internal, "/", { method: "HEAD" });
    expect(head).toMatchObject({ status: 200, body: "" });
    const closing = await raw(
      internal,
      [`GET / HTTP/1.1\r\nHost: 127.0.0.1:${internal}\r\nConnection: close\r\n\r\n`],
      () => false, // until the gateway closes the connection
    );
    expect(closing).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(closing).toMatch(/\r\nConnection: close\r\n/i);
    expect(closing.endsWith("0\r\n\r\n")).toBe(true);
  });
  it("refuses an HTTP/1.1 request without Host (400), as node's server does, and never forwards it", async () => {
    const { gw, internal } = await gateway();
    gw.addReplica("app", { id: "a", port: (await upstream(echo)).port });
    const text = await raw(internal, ["GET /no-host HTTP/1.1\r\n\r\n"], () => false);
    expect(text).toMatch(/^HTTP\/1\.1 400 /);
    expect(gw.stats("app").requests).toBe(0);
  });
});
