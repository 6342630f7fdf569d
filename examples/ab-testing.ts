/**
 * The seed's A/B testing setup: root-ab-testing-app depends on app-a-variant and app-b-variant;
 * both are ready before the root app starts. The root app sends each user to one variant
 * (a hash of the user id, so a user always sees the same one), or to the one asked for with
 * `?variant=a|b`, and answers with what that variant said.
 */
import { createHash } from "node:crypto";
import Fastify from "fastify";
import { Image, deploy, init } from "caravan-deploy";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";

const image = Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify");

const appA = Fastify();
const appB = Fastify();
const rootApp = Fastify();

export const envA = new FastifyAppEnvironment({
  name: "app-a-variant",
  app: appA,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
});
export const envB = new FastifyAppEnvironment({
  name: "app-b-variant",
  app: appB,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
});
export const envRoot = new FastifyAppEnvironment({
  name: "root-ab-testing-app",
  app: rootApp,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
  dependsOn: [envA, envB], // Depends on both variants
});

appA.get("/", async () => ({ variant: "A", message: "Welcome to the classic page" }));
appB.get("/", async () => ({ variant: "B", message: "Welcome to the redesigned page" }));

/** The variant a user sees: the first byte of a hash of their id decides, half and half. */
function bucketOf(userId: string): "a" | "b" {
  return createHash("sha256").update(userId).digest()[0]! % 2 === 0 ? "a" : "b";
}

rootApp.get<{ Querystring: { user?: string; variant?: string } }>("/", async (req, reply) => {
  const { user, variant } = req.query;
  if (variant !== undefined && variant !== "a" && variant !== "b")
    return reply.code(400).send({ error: "variant must be a or b" });
  if (variant === undefined && !user)
    return reply.code(400).send({ error: "give ?user=<id> (or ?variant=a|b)" });
  const chosen = variant ?? bucketOf(user!);
  const target = chosen === "a" ? envA : envB;
  const res = await fetch(`${target.endpoint}/`);
  if (!res.ok) throw new Error(`${target.name} answered ${res.status}`);
  return { servedBy: target.name, user: user ?? null, ...((await res.json()) as object) };
});

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  // app-a-variant and app-b-variant first (in parallel), then root-ab-testing-app.
  const deployments = await deploy(envRoot);
  for (const deployment of deployments) console.log(`Deployed: ${deployment.envRepr()}`);
}
