/**
 * The seed's "Using AppEndpoint for dependency URLs": frontend-app gets backend-api's URL as an
 * input, `backend_url`, resolved at deploy time. In a handler, `getInput("backend_url")` reads it
 * (apps in other languages read the environment variable BACKEND_URL).
 */
import Fastify from "fastify";
import { AppEndpoint, Image, Input, deploy, getInput, init } from "caravan-deploy";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";

const image = Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify");

const backendApp = Fastify();
export const backendEnv = new FastifyAppEnvironment({
  name: "backend-api",
  app: backendApp,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
});

const frontendApp = Fastify();
export const frontendEnv = new FastifyAppEnvironment({
  name: "frontend-app",
  app: frontendApp,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
  dependsOn: [backendEnv],
  inputs: [
    new Input({
      name: "backend_url",
      value: new AppEndpoint({ appName: "backend-api" }),
    }),
  ],
});

backendApp.get<{ Params: { name: string } }>(
  "/greeting/:name",
  async (req) => `Hello from backend-api, ${req.params.name}!`,
);

frontendApp.get("/backend-url", async () => getInput("backend_url"));
frontendApp.get<{ Params: { name: string } }>("/greeting/:name", async (req) => {
  const backendUrl = getInput("backend_url");
  const res = await fetch(`${backendUrl}/greeting/${encodeURIComponent(req.params.name)}`);
  if (!res.ok) throw new Error(`backend-api answered ${res.status}`);
  return `frontend-app relays: ${await res.text()}`;
});

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  const deployments = await deploy(frontendEnv);
  for (const deployment of deployments) console.log(`Deployed: ${deployment.envRepr()}`);
}
