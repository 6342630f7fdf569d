/** The seed's example: one app calling another (app2 depends on app1 and proxies to it). */
import Fastify from "fastify";
import { Image, deploy, init } from "caravan-deploy";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";

const image = Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify");

const app1 = Fastify();
export const env1 = new FastifyAppEnvironment({
  name: "app1-is-called-by-app2",
  app: app1,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
});

const app2 = Fastify();
export const env2 = new FastifyAppEnvironment({
  name: "app2-calls-app1",
  app: app2,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
  dependsOn: [env1],
});

app1.get<{ Params: { name: string } }>(
  "/greeting/:name",
  async (req) => `Hello, ${req.params.name}!`,
);
app2.get("/app1-endpoint", async () => env1.endpoint);
app2.get<{ Params: { name: string } }>("/greeting/:name", async (req) => {
  const res = await fetch(`${env1.endpoint}/greeting/${req.params.name}`);
  if (!res.ok) throw new Error(`app1 answered ${res.status}`);
  return res.text();
});

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  const deployments = await deploy(env2);
  console.log(`Deployed: ${deployments[0]!.envRepr()}`);
}
