/**
 * The seed's dependency chain: service-1 <- service-2 <- service-3. Deploying service-3 deploys
 * service-1, then service-2, then service-3, each ready before the next starts. Every service
 * answers `/chain` by calling the one it depends on, so service-3's answer shows all three hops.
 */
import Fastify from "fastify";
import { Image, deploy, init } from "caravan-deploy";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";

const image = Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify");

const app1 = Fastify();
export const service1 = new FastifyAppEnvironment({
  name: "service-1",
  app: app1,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
});

const app2 = Fastify();
export const service2 = new FastifyAppEnvironment({
  name: "service-2",
  app: app2,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
  dependsOn: [service1],
});

const app3 = Fastify();
export const service3 = new FastifyAppEnvironment({
  name: "service-3",
  app: app3,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
  dependsOn: [service2],
});

/** Calls `/chain` on a dependency and returns its answer. */
async function chainOf(endpoint: string): Promise<string> {
  const res = await fetch(`${endpoint}/chain`);
  if (!res.ok) throw new Error(`${endpoint} answered ${res.status}`);
  return res.text();
}

app1.get("/chain", async () => "service-1");
app2.get("/chain", async () => `service-2 -> ${await chainOf(service1.endpoint)}`);
app3.get("/chain", async () => `service-3 -> ${await chainOf(service2.endpoint)}`);

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  // Deploys service-1 -> service-2 -> service-3.
  const deployments = await deploy(service3);
  for (const deployment of deployments) console.log(`Deployed: ${deployment.envRepr()}`);
}
