/**
 * An Express app (`caravan/express`): served by caravan's runtime, ready once it listens,
 * closed gracefully on stop. `examples/hono-app.ts` deploys a Hono app that calls it.
 */
import express from "express";
import { Image, deploy, init } from "caravan-deploy";
import { ExpressAppEnvironment } from "caravan-deploy/express";

const app = express();
app.get("/greeting/:name", (req, res) => {
  res.type("text/plain").send(`Hello from Express, ${req.params.name}!`);
});
app.get("/kind", (_req, res) => {
  res.json({ framework: "express", app: process.env.CARAVAN_APP_NAME });
});

export const expressEnv = new ExpressAppEnvironment({
  name: "express-greeter",
  app,
  image: Image.fromDebianBase({ node: "22" }).withNpmPackages("express"),
  resources: { cpu: 1, memory: "256Mi" },
  requiresAuth: false,
});

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  const deployments = await deploy(expressEnv);
  for (const deployment of deployments) console.log(`Deployed: ${deployment.envRepr()}`);
}
