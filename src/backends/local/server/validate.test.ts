import { describe, expect, it } from "vitest";
import { AppEnvironment } from "../../../sdk/environment.ts";
import type { DeployRequest } from "../../contract.ts";
import type { ControlPlane } from "../control-plane.ts";
import { buildApi } from "./api.ts";

const TOKEN = "t".repeat(64);

/** The API over a control plane that records what reached it. */
function api() {
  const calls: string[] = [];
  const plane = new Proxy(
    {},
    {
      get: (_, method: string) =>
        method === "tokens"
          ? { create: async () => (calls.push("tokens.create"), { id: "x" }) }
          : async () => {
              calls.push(method);
              return method === "status" ? [] : { status: "ready", revision: "r" };
            },
    },
  ) as unknown as ControlPlane;
  const app = buildApi(plane, TOKEN, () => {});
  const send = async (method: "GET" | "POST", url: string, payload?: unknown) => {
    const res = await app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${TOKEN}` },
      ...(payload === undefined ? {} : { payload: payload as object }),
    });
    return { status: res.statusCode, body: res.json() as { error?: { message: string } } };
  };
  return { app, calls, send };
}

function deployRequest(): DeployRequest {
  const env = new AppEnvironment({ name: "web", command: ["node", "server.js"] });
  return {
    scope: { project: "p", domain: "d" },
    name: "web",
    kind: "app",
    spec: env.spec(),
    revision: "abc123",
    code: {
      hash: "h1",
      entry: "/tmp/b/entry.js",
      sourceRoot: "/tmp/src",
      runtime: "/tmp/r/main.js",
    },
    inputs: {},
    dependencies: {},
  };
}

describe("the daemon's API validates every request itself", () => {
  it("refuses a ../ name or scope with 400 naming the field; the control plane never sees it", async () => {
    const { app, calls, send } = api();
    const cases: [string, "GET" | "POST", string, unknown][] = [
      ["name", "POST", "/v1/deploy", { ...deployRequest(), name: "../x" }],
      [
        "scope.project",
        "POST",
        "/v1/deploy",
        { ...deployRequest(), scope: { project: "../..", domain: "d" } },
      ],
      [
        "names[1]",
        "POST",
        "/v1/reserve",
        { scope: { project: "p", domain: "d" }, names: ["ok", "../evil"] },
      ],
      ["names", "POST", "/v1/stop", { scope: { project: "p", domain: "d" }, names: "web" }],
      [
        "scope.domain",
        "POST",
        "/v1/delete",
        { scope: { project: "p", domain: "a/b" }, names: ["web"] },
      ],
      ["name", "POST", "/v1/discard", { scope: { project: "p", domain: "d" }, name: "../x" }],
      ["name", "POST", "/v1/login-link", { scope: { project: "p", domain: "d" }, name: "A B" }],
      ["name", "GET", "/v1/logs?project=p&domain=d&name=..%2F..%2Fetc", undefined],
      ["tail", "GET", "/v1/logs?project=p&domain=d&name=web&tail=-1", undefined],
      ["project", "GET", "/v1/status?project=..&domain=d", undefined],
      ["status", "GET", "/v1/traces?status=failed", undefined],
      ["minDurationMs", "GET", "/v1/traces?minDurationMs=-1", undefined],
      ["app", "GET", "/v1/metrics?project=p&domain=d", undefined],
      ["limit", "GET", "/v1/log-records?project=p&domain=d&app=web&limit=99999", undefined],
      [
        "spec.name",
        "POST",
        "/v1/deploy",
        { ...deployRequest(), spec: { ...deployRequest().spec, name: "other" } },
      ],
      [
        "code.entry",
        "POST",
        "/v1/deploy",
        { ...deployRequest(), code: { ...deployRequest().code, entry: "rel.js" } },
      ],
      ["request body", "POST", "/v1/prepare", [1, 2]],
    ];
    try {
      for (const [field, method, url, body] of cases) {
        const res = await send(method, url, body);
        expect(res.status, `${method} ${url} ${field}`).toBe(400);
        expect(res.body.error?.message, field).toMatch(
          new RegExp(`^${field.replace(/[[\]]/g, "\\$&")} `),
        );
      }
      expect(calls).toEqual([]);
      // A well-formed request goes through.
      expect((await send("POST", "/v1/deploy", deployRequest())).status).toBe(200);
      expect(calls).toEqual(["deploy"]);
    } finally {
      await app.close();
    }
  });
});
