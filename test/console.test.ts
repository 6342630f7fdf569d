/**
 * The web console end to end, in Debian's Chromium driven by playwright-core (never a
 * downloaded browser): log in through `caravan console`'s one-time link, see the seed
 * example's graph live, watch a killed app come back while following its log, follow a request
 * across both apps in the traces view (with its logs) and see an app's metrics, run a task,
 * stop and start an app, and be refused without the session. One deploy serves every step.
 *
 * `CARAVAN_UPDATE_SCREENSHOT=1` also writes the screenshot it takes to docs/console.png.
 */
import { copyFileSync, existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ROOT, eventually, sandbox, type Sandbox } from "./helpers.ts";
import { deploy, get, json, status } from "./support.ts";

const CHROMIUM = "/usr/bin/chromium";
const APP1 = "app1-is-called-by-app2";
const APP2 = "app2-calls-app1";

describe.skipIf(!existsSync(CHROMIUM))("the web console", () => {
  let sb: Sandbox;
  let browser: Browser;
  let page: Page;
  let base: string;

  const node = (name: string) => page.locator(`g.node[data-name="${name}"]`);
  const stateOf = (name: string) => node(name).getAttribute("data-state");
  const loginLink = async () => {
    const r = await sb.run(["console", "--json", "--no-open"]);
    expect(r.code, r.stderr).toBe(0);
    return json<{ url: string }>(r).url;
  };

  beforeAll(async () => {
    sb = sandbox();
    for (const file of ["examples/app-calling-app.ts", "examples/task-env-dependency.ts"]) {
      const r = await deploy(sb, [join(ROOT, file)]);
      expect(r.code, r.stderr).toBe(0);
    }
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // As root in a container, Chromium's sandbox cannot start.
      args: ["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await sb?.cleanup();
  });

  it("logs in through a one-time link and shows the graph with both apps ready", async () => {
    const link = await loginLink();
    base = new URL(link).origin;
    const res = await page.goto(link);
    expect(res?.status()).toBe(200);
    expect(new URL(page.url()).pathname).toBe("/console/");
    await page.locator(`g.node[data-name="${APP1}"][data-state="ready"]`).waitFor();
    await page.locator(`g.node[data-name="${APP2}"][data-state="ready"]`).waitFor();
    // Labelled in words, not only by colour.
    expect(await node(APP1).textContent()).toContain("ready");
    // Laid out as a DAG: a dependency sits left of its dependent.
    const x = async (name: string) => (await node(name).boundingBox())!.x;
    expect(await x(APP1)).toBeLessThan(await x(APP2));
    // The link works once.
    const again = await fetch(link, { redirect: "manual" });
    expect(again.status).toBe(401);
  });

  it("shows a killed app change state and come back, live, while following its log", async () => {
    await node(APP1).click();
    const log = page.locator(".log-lines");
    await expect.poll(() => log.textContent()).toContain(`starting ${APP1}`);
    const startsBefore = ((await log.textContent()) ?? "").split(`starting ${APP1}`).length;
    // Every state the node shows from now on.
    // (Runs in the page: its globals are the browser's.)
    await page.evaluate((name) => {
      const page = globalThis as any;
      const seen: string[] = (page.seen = []);
      new page.MutationObserver(() => {
        const state = page.document
          .querySelector(`g.node[data-name="${name}"]`)
          ?.getAttribute("data-state");
        if (state && seen.at(-1) !== state) seen.push(state);
      }).observe(page.document.querySelector("svg.graph"), {
        attributes: true,
        subtree: true,
        childList: true,
      });
    }, APP1);

    const before = (await status(sb))[APP1]!;
    process.kill(before.pids[0]!, "SIGKILL");

    const seen = async () => page.evaluate(() => (globalThis as any).seen as string[]);
    await eventually(async () => (await seen()).some((s) => s !== "ready"));
    await eventually(async () => (await seen()).at(-1) === "ready");
    expect(await page.getByTestId("restarts").textContent()).toBe("1");
    // The restarted process's lines arrive in the followed log.
    await eventually(
      async () => ((await log.textContent()) ?? "").split(`starting ${APP1}`).length > startsBefore,
    );
    const after = (await status(sb))[APP1]!;
    expect(after.pids[0]).not.toBe(before.pids[0]);
  });

  it("opens an app's panel with endpoints, traffic and dependencies; delete asks first", async () => {
    // With the keyboard: a node takes the focus, Enter opens its panel, Escape closes it.
    await node(APP2).focus();
    await page.keyboard.press("Enter");
    const panel = page.locator("aside.panel");
    await expect.poll(() => panel.locator("h2").textContent()).toBe(APP2);
    await page.keyboard.press("Escape");
    await expect.poll(() => panel.count()).toBe(0);
    await node(APP2).click();
    const app2 = (await status(sb))[APP2]!;
    await expect.poll(() => panel.textContent()).toContain(app2.endpoint!);
    for (let i = 0; i < 3; i++)
      expect((await get(`${app2.endpoint}/greeting/console`)).body).toBe("Hello, console!");
    await expect.poll(() => panel.locator(".traffic").textContent()).toMatch(/[3-9] requests/);
    expect(await panel.textContent()).toContain(APP1); // its dependency
    // Some traffic for the chart (a sample a second) before the screenshot.
    const chart = panel.locator(".chart");
    while (Number(await chart.getAttribute("data-samples")) < 4)
      await get(`${app2.endpoint}/greeting/console`);
    await page.screenshot({ path: join(sb.home, "console.png") });
    if (process.env.CARAVAN_UPDATE_SCREENSHOT)
      copyFileSync(join(sb.home, "console.png"), join(ROOT, "docs/console.png"));
    expect(readFileSync(join(sb.home, "console.png")).subarray(1, 4).toString()).toBe("PNG");

    // Deleting app1 would take app2 down first: the confirmation says so.
    await node(APP1).click();
    await page.getByRole("button", { name: "Delete…" }).click();
    const confirm = page.getByRole("alertdialog");
    expect(await confirm.textContent()).toContain(APP2);
    await confirm.getByRole("button", { name: "Cancel" }).click();
    expect((await status(sb))[APP1]!.state).toBe("ready");
  });

  it("shows a request to app2 as one trace across both apps: the list, its waterfall, its logs; an app's metrics", async () => {
    const app2 = (await status(sb))[APP2]!;
    expect((await get(`${app2.endpoint}/greeting/World`)).body).toBe("Hello, World!");
    await page.getByRole("link", { name: "Traces" }).click();
    // The list polls: the trace appears once both apps' spans are in.
    const row = page
      .locator("table.trace-list tbody tr")
      .filter({ hasText: "/greeting/World" })
      .filter({ hasText: APP1 })
      .filter({ hasText: APP2 });
    await row.first().waitFor();
    const traceId = (await row.first().getAttribute("data-trace"))!;
    expect(traceId).toMatch(/^[0-9a-f]{32}$/);
    // Filters: it is ok, it has a span of app1, it is not an hour long.
    const choose = (label: string, value: string) =>
      page.getByLabel(`filter by ${label}`).selectOption(value);
    const minimum = (ms: string) => page.getByLabel("minimum duration (ms)").fill(ms);
    await choose("status", "error");
    await expect.poll(() => page.locator(`tr[data-trace="${traceId}"]`).count()).toBe(0);
    await choose("status", "ok");
    await choose("app", APP1);
    await page.locator(`tr[data-trace="${traceId}"]`).waitFor();
    await minimum("3600000");
    await expect.poll(() => page.locator(`tr[data-trace="${traceId}"]`).count()).toBe(0);
    await minimum("");
    await choose("app", "");
    await choose("status", "");

    // What an app with an OpenTelemetry SDK would send: a log record within the trace (in
    // app1's server span) and a gauge, as OTLP/JSON to the receiver.
    const token = readFileSync(join(sb.home, "token"), "utf8").trim();
    const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
    type Spans = { spans: { spanId: string; app: string; kind: string; name: string }[] };
    // The whole trace: the gateway's two spans come at once, the apps' with their next export.
    const spans = await eventually(async () => {
      const t = (await (await fetch(`${base}/v1/traces/${traceId}`, { headers })).json()) as Spans;
      return t.spans.length >= 5 ? t : undefined;
    });
    // app1's own server span (the gateway's span in front of it is a server span of app1 too).
    const server1 = spans.spans.find(
      (s) => s.app === APP1 && s.kind === "server" && !s.name.startsWith("gateway "),
    )!;
    const resource = {
      attributes: [
        ["service.name", APP1],
        ["caravan.project", "default"],
        ["caravan.domain", "development"],
      ].map(([key, v]) => ({ key, value: { stringValue: v } })),
    };
    const nowNs = BigInt(Date.now()) * 1_000_000n;
    const logs = await fetch(`${base}/otlp/v1/logs`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        resourceLogs: [
          {
            resource,
            scopeLogs: [
              {
                logRecords: [
                  {
                    timeUnixNano: String(nowNs),
                    severityText: "INFO",
                    body: { stringValue: "greeted World" },
                    traceId,
                    spanId: server1.spanId,
                  },
                ],
              },
            ],
          },
        ],
      }),
    });
    expect(logs.status).toBe(200);
    const gauge = [3, 5, 4].map((v, i) => ({
      timeUnixNano: String(nowNs - BigInt(3 - i) * 1_000_000_000n),
      asDouble: v,
    }));
    const metrics = await fetch(`${base}/otlp/v1/metrics`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        resourceMetrics: [
          {
            resource,
            scopeMetrics: [{ metrics: [{ name: "queue.depth", gauge: { dataPoints: gauge } }] }],
          },
        ],
      }),
    });
    expect(metrics.status).toBe(200);

    // The waterfall: app1's server span under app2's, bars in the apps' colours.
    await row.first().getByRole("link").click();
    await page.waitForURL(`**#/traces/${traceId}`);
    const spanRows = page.locator(".waterfall [role=option]");
    await expect.poll(() => spanRows.count()).toBeGreaterThanOrEqual(3);
    const depthOf = async (app: string) =>
      Number(
        await page.locator(`[role=option][data-app="${app}"]`).last().getAttribute("data-depth"),
      );
    expect(await depthOf(APP1)).toBeGreaterThan(await depthOf(APP2));
    const colour = (app: string) =>
      page
        .locator(`[data-app="${app}"] .span-bar`)
        .first()
        // (Runs in the page: its globals are the browser's.)
        .evaluate((e) => (globalThis as any).getComputedStyle(e).backgroundColor as string);
    expect(await colour(APP1)).not.toBe(await colour(APP2));
    // With the keyboard: the first span takes the focus, arrows select the next and the last.
    await spanRows.first().focus();
    await page.keyboard.press("ArrowDown");
    await expect.poll(() => spanRows.nth(1).getAttribute("aria-selected")).toBe("true");
    await page.keyboard.press("End");
    await expect.poll(() => spanRows.last().getAttribute("aria-selected")).toBe("true");
    await expect.poll(() => page.getByTestId("span-attributes").textContent()).toContain("span id");
    // Its log record beside it, and from the record to its span.
    const traceLogs = page.locator("section.trace-logs");
    await expect.poll(() => traceLogs.textContent()).toContain("greeted World");
    await spanRows.first().click();
    await traceLogs.getByRole("button", { name: "its span" }).click();
    await expect
      .poll(() => page.locator(`[data-span="${server1.spanId}"]`).getAttribute("aria-selected"))
      .toBe("true");
    expect(await page.getByTestId("span-attributes").textContent()).toContain(
      "http.response.status_code",
    );

    // app1's panel: its metric charted, its log record linking back to the trace.
    await page.getByRole("link", { name: "Graph" }).click();
    await node(APP1).click();
    const chart = page.locator('.chart.metric[data-metric="queue.depth"]');
    await expect.poll(() => chart.getAttribute("data-points")).toBe("3");
    expect(await chart.locator("canvas").count()).toBe(1);
    const records = page.locator("section.log-records");
    await expect.poll(() => records.textContent()).toContain("greeted World");
    await records.getByRole("link", { name: "trace" }).click();
    await page.waitForURL(`**#/traces/${traceId}`);
    await page.locator(".waterfall [role=option]").first().waitFor();
    await page.getByRole("link", { name: "Graph" }).click();
  });

  it("runs a task from its environment's panel and opens the run; re-runs it", async () => {
    await node("training-env").click();
    await page.getByLabel("arguments (JSON array)").fill("[[[1, 2], [2, 4]]]");
    await page.getByRole("button", { name: "Run", exact: true }).click();
    await page.waitForURL(/#\/runs\/.+/);
    const first = decodeURIComponent(page.url().split("#/runs/")[1]!);
    await expect.poll(() => page.getByTestId("run-status").textContent()).toBe("succeeded");
    expect(JSON.parse((await page.getByTestId("run-output").textContent())!)).toEqual({
      slope: 2,
      points: 2,
    });
    expect(await page.locator("article.run").textContent()).toContain("training on 2 points");

    await page.getByRole("button", { name: "Re-run" }).click();
    await page.waitForURL((url) => !url.hash.endsWith(first) && url.hash.startsWith("#/runs/"));
    await expect.poll(() => page.getByTestId("run-status").textContent()).toBe("succeeded");
    await page.getByRole("link", { name: /^Runs/ }).click();
    await expect.poll(() => page.locator("table.runs tbody tr").count()).toBe(2);
  });

  it("stops and starts an app", async () => {
    await page.getByRole("link", { name: "Graph" }).click();
    await node(APP2).click();
    await page.getByRole("button", { name: "Stop" }).click();
    await page.locator(`g.node[data-name="${APP2}"][data-state="stopped"]`).waitFor();
    expect((await status(sb))[APP2]!.state).toBe("stopped");
    await page.getByRole("button", { name: "Start" }).click();
    await page.locator(`g.node[data-name="${APP2}"][data-state="ready"]`).waitFor();
    const app2 = (await status(sb))[APP2]!;
    expect(app2.state).toBe("ready");
    expect((await get(`${app2.endpoint}/greeting/again`)).body).toBe("Hello, again!");
    expect(await stateOf(APP2)).toBe("ready");
  });

  it("scales an app within its bounds: to zero, and a request wakes it", async () => {
    await node(APP2).click();
    const replicas = page.getByLabel("replicas");
    expect(await replicas.getAttribute("max")).toBe("1"); // scaling.replicas [0, 1]
    await replicas.fill("0");
    await page.getByRole("button", { name: "Scale" }).click();
    await page.locator(`g.node[data-name="${APP2}"][data-state="scaled to zero"]`).waitFor();
    const app2 = (await status(sb))[APP2]!;
    expect(app2.pids).toEqual([]);
    expect((await get(`${app2.endpoint}/greeting/awake`)).body).toBe("Hello, awake!");
    await page.locator(`g.node[data-name="${APP2}"][data-state="ready"]`).waitFor();
  });

  it("refuses every console page and API request without the session", async () => {
    const stranger = await browser.newContext();
    try {
      const res = await (await stranger.newPage()).goto(`${base}/console/`);
      expect(res?.status()).toBe(401);
    } finally {
      await stranger.close();
    }
    const paths = [
      "/console/",
      "/console/index.html",
      "/v1/status",
      "/console/api/v1/status",
      "/console/api/v1/watch?project=default&domain=development",
      "/console/api/v1/events?project=default&domain=development",
    ];
    for (const path of paths) expect((await fetch(`${base}${path}`)).status, path).toBe(401);
    // A made-up session, or an app's API token in the cookie, opens nothing either.
    const cookie = `caravan_session_console_${new URL(base).port}=cvs_madeup`;
    expect((await fetch(`${base}/console/api/v1/status`, { headers: { cookie } })).status).toBe(
      401,
    );
    // The browser's own session cannot change anything without the console's header (a page
    // of another site cannot send it).
    const [session] = await page.context().cookies(`${base}/console/`);
    // Scoped to the console's path: other servers on this host never receive it.
    expect(session).toMatchObject({ httpOnly: true, sameSite: "Strict", path: "/console/" });
    const stop = await fetch(`${base}/console/api/v1/stop`, {
      method: "POST",
      headers: { cookie: `${session!.name}=${session!.value}`, "content-type": "application/json" },
      body: JSON.stringify({ scope: { project: "default", domain: "development" }, names: [APP2] }),
    });
    expect(stop.status).toBe(401);
    expect((await status(sb))[APP2]!.state).toBe("ready");
  });
});
