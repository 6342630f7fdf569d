/**
 * Public endpoints on a cluster: the namespace's gateway and its objects, Ingresses, tokens in
 * a Secret, and the gateway process itself — the compiled bundle a pod runs, started here with
 * the identity its pod would have (a token of its service account, so its Role is what is
 * tested), reading the test cluster. Pods are simulated, so the gateway is pointed at a local
 * server standing in for `web`'s pod (CARAVAN_GATEWAY_UPSTREAM_HOST); everything else is real.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { createServer as createNetServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { HttpBackend } from "../../src/backends/http-client.ts";
import { buildRuntime } from "../../src/backends/runtime-build.ts";
import { GATEWAY_ENTRY } from "../../src/backends/kubernetes/cluster-gateway.ts";
import { eventually } from "../helpers.ts";
import { fixture, json, type StatusJSON } from "../support.ts";
import { clusterAvailable, scoped, useKubeSandbox } from "./support.ts";

const FILE = fixture("kubernetes/exposed/main.ts");

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createNetServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

describe.skipIf(!clusterAvailable())("the gateway on a cluster", { timeout: 180_000 }, () => {
  const k = useKubeSandbox();

  it("exposes apps through the namespace's gateway, checks tokens from its Secret, serves runs, and goes with the last app", async () => {
    const kube = k.kube();
    const ns = k.namespace();
    const webPort = await freePort();
    const outcome = JSON.stringify({ ok: true, output: 5 });
    const env = {
      WEB_PORT: String(webPort),
      RUN_ANNOTATIONS: JSON.stringify({ "caravan.test/termination-message": outcome }),
    };
    const deployed = await k.sb.run(scoped(k, "deploy", FILE, "--json"), { env });
    expect(deployed.code, deployed.stderr).toBe(0);

    // The gateway's objects; a port per app on its Service, kept on the app's Service.
    for (const kind of ["ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"] as const)
      expect(await kube.get(kind, ns, "caravan-gateway"), kind).toBeTruthy();
    const portOf = async (app: string) =>
      Number((await kube.get("Service", ns, app)).metadata.annotations["caravan.dev/public-port"]);
    const [webGatewayPort, openGatewayPort] = [await portOf("web"), await portOf("open")];
    expect(webGatewayPort).toBeGreaterThan(0);
    const gatewayService = await kube.get("Service", ns, "caravan-gateway");
    expect(gatewayService.spec.ports.map((p: { port: number }) => p.port).sort()).toEqual(
      [8021, webGatewayPort, openGatewayPort].sort(),
    );

    // Ingress: through the gateway for an app that requires auth, straight to the app if not.
    const webIngress = await kube.get("Ingress", ns, "web");
    expect(webIngress.spec.ingressClassName).toBe("nginx");
    expect(webIngress.spec.rules[0].host).toBe("web.apps.example.test");
    expect(webIngress.spec.rules[0].http.paths[0].backend.service).toEqual({
      name: "caravan-gateway",
      port: { number: webGatewayPort },
    });
    const openIngress = await kube.get("Ingress", ns, "open");
    expect(openIngress.spec.rules[0].host).toBe("open.example.test");
    expect(openIngress.spec.rules[0].http.paths[0].backend.service.name).toBe("open");

    // Apps get the run API and its token by reference, never the value.
    const container = (await kube.get("Deployment", ns, "web")).spec.template.spec.containers[0];
    const envOf = (name: string) => container.env.find((e: { name: string }) => e.name === name);
    expect(envOf("CARAVAN_API_URL").value).toBe(
      `http://caravan-gateway.${ns}.svc.cluster.local:8021`,
    );
    expect(envOf("CARAVAN_API_TOKEN").valueFrom.secretKeyRef).toEqual({
      name: "caravan-gateway",
      key: "run-token",
    });

    // status: the public URL, the in-cluster one beside it.
    const st = json<{ environments: StatusJSON[] }>(
      await k.sb.run(scoped(k, "status", "--json")),
    ).environments;
    const web = st.find((e) => e.name === "web")!;
    expect(web.endpoint).toBe("http://web.apps.example.test");
    expect(web.internalEndpoint).toBe(`http://web.${ns}.svc.cluster.local`);

    // A token: its hash in the namespace's Secret, its value only on the CLI's stdout.
    const created = json<{ id: string; token: string }>(
      await k.sb.run(scoped(k, "token", "create", "--name", "ci", "--json")),
    );
    const secret = JSON.stringify(await kube.get("Secret", ns, "caravan-tokens"));
    expect(secret).not.toContain(created.token);
    const listed = json<{ tokens: { name: string; revoked: boolean }[] }>(
      await k.sb.run(scoped(k, "token", "list", "--json")),
    ).tokens;
    expect(listed).toEqual([expect.objectContaining({ name: "ci", revoked: false })]);
    const link = await k.sb.run(scoped(k, "token", "link", "web"));
    expect(link.code).not.toBe(0);
    expect(link.stderr).toContain("caravan token create --backend kubernetes");

    // The gateway process, as its pod runs it.
    const kubeconfig = parseYaml(readFileSync(process.env.KUBECONFIG!, "utf8"));
    const server = new URL(kubeconfig.clusters[0].cluster.server);
    const identity = mkdtempSync(join(tmpdir(), "caravan-gateway-sa-"));
    const requested = await kube.call(
      "POST",
      `/api/v1/namespaces/${ns}/serviceaccounts/caravan-gateway/token`,
      { body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenRequest", spec: {} } },
    );
    writeFileSync(join(identity, "token"), requested.status.token);
    writeFileSync(
      join(identity, "ca.crt"),
      Buffer.from(kubeconfig.clusters[0].cluster["certificate-authority-data"], "base64"),
    );
    const runtime = await buildRuntime(join(identity, "runtime"));
    const apiPort = await freePort();
    let upstream: Server | undefined;
    let gateway: ChildProcess | undefined;
    let output = "";
    try {
      upstream = createServer((req, res) =>
        res.end(`web pod got ${req.url} auth=${req.headers.authorization ?? "none"}`),
      );
      await new Promise<void>((r) => upstream!.listen(webPort, "127.0.0.1", r));
      gateway = spawn(process.execPath, [join(runtime, `${GATEWAY_ENTRY}.js`)], {
        env: {
          PATH: process.env.PATH,
          KUBERNETES_SERVICE_HOST: server.hostname,
          KUBERNETES_SERVICE_PORT: server.port,
          CARAVAN_SERVICE_ACCOUNT_DIR: identity,
          CARAVAN_GATEWAY_NAMESPACE: ns,
          CARAVAN_GATEWAY_HOST: "127.0.0.1",
          CARAVAN_GATEWAY_API_PORT: String(apiPort),
          CARAVAN_GATEWAY_UPSTREAM_HOST: "127.0.0.1",
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      gateway.stdout!.on("data", (d) => (output += d));
      gateway.stderr!.on("data", (d) => (output += d));
      await eventually(() => output.includes("serving"), 30_000);

      const publicUrl = `http://127.0.0.1:${webGatewayPort}/hello`;
      expect((await fetch(publicUrl)).status, output).toBe(401);
      expect(
        (await fetch(publicUrl, { headers: { authorization: "Bearer cvn_wrong-token-value" } }))
          .status,
      ).toBe(401);
      const ok = await fetch(publicUrl, { headers: { authorization: `Bearer ${created.token}` } });
      expect(ok.status, output).toBe(200);
      // The app sees the request, not caravan's token.
      expect(await ok.text()).toBe("web pod got /hello auth=none");

      // Runs through the gateway's run API, as an app calls them (CARAVAN_API_URL + its token).
      const own = await kube.get("Secret", ns, "caravan-gateway");
      const runToken = Buffer.from(own.data["run-token"], "base64").toString("utf8");
      const api = `http://127.0.0.1:${apiPort}`;
      expect((await fetch(`${api}/v1/runs`)).status).toBe(401);
      const run = await new HttpBackend(api, runToken).startRun(
        { scope: { project: k.project(), domain: "development" }, task: "jobs.add", args: [2, 3] },
        { waitMs: 30_000 },
      );
      expect(run).toMatchObject({ status: "succeeded", output: 5, task: "jobs.add" });
      expect(run.id.startsWith(`${ns}/`)).toBe(true);
      // Listing without a scope lists this namespace's runs (the token is good for no other).
      const listed = await new HttpBackend(api, runToken).listRuns(undefined);
      expect(listed.map((r) => r.id)).toContain(run.id);

      // A revoked token stops working within the gateway's poll.
      const revoked = await k.sb.run(scoped(k, "token", "revoke", "ci"));
      expect(revoked.code, revoked.stderr).toBe(0);
      await eventually(
        async () =>
          (await fetch(publicUrl, { headers: { authorization: `Bearer ${created.token}` } }))
            .status === 401,
        10_000,
      );
    } finally {
      gateway?.kill("SIGTERM");
      if (gateway && gateway.exitCode === null) await new Promise((r) => gateway!.once("exit", r));
      await new Promise((r) => (upstream ? upstream.close(r) : r(undefined)));
      rmSync(identity, { recursive: true, force: true });
    }

    // Deleting every environment takes the gateway with it; the token hashes stay.
    const deleted = await k.sb.run(scoped(k, "delete", "web", "open", "jobs", "--cascade"));
    expect(deleted.code, deleted.stderr).toBe(0);
    for (const kind of ["Deployment", "Service", "ServiceAccount", "Role", "RoleBinding"] as const)
      expect(await kube.get(kind, ns, "caravan-gateway"), kind).toBeUndefined();
    expect(await kube.get("Ingress", ns, "web")).toBeUndefined();
    expect(await kube.get("Secret", ns, "caravan-tokens")).toBeTruthy();
  });

  it("an ingress subdomain without a domain to complete it is refused before anything is applied", async () => {
    const r = await k.sb.run(scoped(k, "deploy", fixture("kubernetes/graph.ts"), "--json"), {
      env: { K8S_SUBDOMAIN: "shop" },
    });
    expect(r.code).not.toBe(0);
    expect(r.stderr + r.stdout).toContain("needs a domain to complete it");
    expect(await k.kube().get("Namespace", undefined, k.namespace())).toBeUndefined();
  });
});
