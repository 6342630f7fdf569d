/**
 * A Hono app (`caravan/hono`, served with `@hono/node-server`) that depends on the Express app
 * of `examples/express-app.ts` and calls it through `expressEnv.endpoint`.
 */
import { Hono } from "hono";
import { Image, deploy, init } from "caravan-deploy";
import { HonoAppEnvironment } from "caravan-deploy/hono";
import { expressEnv } from "./express-app.ts";

const app = new Hono();
app.get("/kind", (c) => c.json({ framework: "hono", app: process.env.CARAVAN_APP_NAME }));
app.get("/express-endpoint", (c) => c.text(expressEnv.endpoint));
app.get("/greeting/:name", async (c) => {
  const res = await fetch(
    `${expressEnv.endpoint}/greeting/${encodeURIComponent(c.req.param("name"))}`,
  );
  if (!res.ok) return c.text(`express-greeter answered ${res.status}`, 502);
  return c.text(`hono relays: ${await res.text()}`);
});

export const honoEnv = new HonoAppEnvironment({
  name: "hono-front",
  app,
  image: Image.fromDebianBase({ node: "22" }).withNpmPackages("hono", "@hono/node-server"),
  resources: { cpu: 1, memory: "256Mi" },
  requiresAuth: false,
  dependsOn: [expressEnv],
});

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  const deployments = await deploy(honoEnv);
  for (const deployment of deployments) console.log(`Deployed: ${deployment.envRepr()}`);
}
