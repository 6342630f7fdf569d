/**
 * The seed's task environment dependency: serving-app depends on the task environment
 * "training-env", which is deployed (its tasks registered) before the app starts.
 *
 * Running tasks (`caravan run`) is not built yet: this example only declares the task. The
 * app serves a tiny model and says which tasks the environment it depends on provides.
 */
import Fastify from "fastify";
import { Image, TaskEnvironment, deploy, init } from "caravan";
import { FastifyAppEnvironment } from "caravan/fastify";

const image = Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify");

export const trainingEnv = new TaskEnvironment({
  name: "training-env",
  image,
  resources: { cpu: 2, memory: "1Gi" },
});

/** Fits y = slope * x through the origin (least squares). Declared, not run, here. */
export const train = trainingEnv.task(async function train(points: [number, number][]) {
  const xy = points.reduce((sum, [x, y]) => sum + x * y, 0);
  const xx = points.reduce((sum, [x]) => sum + x * x, 0);
  return { slope: xx === 0 ? 0 : xy / xx };
});

const servingApp = Fastify();
export const servingEnv = new FastifyAppEnvironment({
  name: "serving-app",
  app: servingApp,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
  dependsOn: [trainingEnv], // Can depend on task environments too
});

/** The model the app serves (what a run of `train` would produce). */
const model = { slope: 2 };

servingApp.get<{ Querystring: { x?: string } }>("/predict", async (req, reply) => {
  const x = Number(req.query.x);
  if (req.query.x === undefined || !Number.isFinite(x))
    return reply.code(400).send({ error: "give a number: /predict?x=3" });
  return { x, y: model.slope * x };
});
servingApp.get("/tasks", async () => ({
  environment: trainingEnv.name,
  tasks: [...trainingEnv.tasks.values()].map((t) => t.id),
}));

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  // training-env first, then serving-app.
  const deployments = await deploy(servingEnv);
  for (const deployment of deployments) console.log(`Deployed: ${deployment.envRepr()}`);
}
