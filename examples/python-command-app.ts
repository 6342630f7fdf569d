/**
 * A command app in another language: python-greeter is `python3 python/server.py` (standard
 * library only), shipped with `include` — the file travels with the revision and the command
 * runs in that snapshot. Its input `greeting` arrives as the env var GREETING and in
 * $CARAVAN_INPUTS_FILE. The TypeScript app ts-caller reaches it through an `AppEndpoint` input.
 */
import Fastify from "fastify";
import { AppEndpoint, AppEnvironment, Image, Input, deploy, getInput, init } from "caravan-deploy";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";

export const pythonEnv = new AppEnvironment({
  name: "python-greeter",
  image: Image.fromRef("python:3.11-slim"),
  command: ["python3", "python/server.py"],
  args: ["--port", "${PORT}"],
  include: ["python/server.py"],
  inputs: [new Input({ name: "greeting", value: "Hello" })],
  requiresAuth: false,
});

const app = Fastify();
export const callerEnv = new FastifyAppEnvironment({
  name: "ts-caller",
  app,
  image: Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify"),
  requiresAuth: false,
  dependsOn: [pythonEnv],
  inputs: [
    new Input({ name: "python_url", value: new AppEndpoint({ appName: "python-greeter" }) }),
  ],
});

app.get("/python-url", async () => getInput("python_url"));
app.get<{ Params: { name: string } }>("/greeting/:name", async (req) => {
  const res = await fetch(
    `${getInput("python_url")}/greeting/${encodeURIComponent(req.params.name)}`,
  );
  if (!res.ok) throw new Error(`python-greeter answered ${res.status}`);
  return `ts-caller relays: ${await res.text()}`;
});

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  const deployments = await deploy(callerEnv);
  for (const deployment of deployments) console.log(`Deployed: ${deployment.envRepr()}`);
}
