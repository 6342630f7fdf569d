/**
 * The seed's task environment dependency: serving-app depends on the task environment
 * "training-env", so the environment is deployed (its tasks registered) before the app
 * starts, and the app can call its tasks.
 *
 *   npx caravan deploy examples/task-env-dependency.ts
 *   curl -X POST localhost:<port>/train -H 'content-type: application/json' -d '{"points":[[1,2],[2,4]]}'
 *   curl 'localhost:<port>/predict?x=3'
 *   npx caravan run examples/task-env-dependency.ts train --input points='[[1,3],[2,6]]'
 */
import Fastify from "fastify";
import { Image, TaskEnvironment, deploy, init, run, task } from "caravan-deploy";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";

const image = Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify");

export const trainingEnv = new TaskEnvironment({
  name: "training-env",
  image,
  resources: { cpu: 2, memory: "1Gi" },
});

/** Fits y = slope * x through the origin (least squares). Runs in a training-env worker. */
export const train = trainingEnv.task(
  async function train(points: [number, number][]) {
    if (!Array.isArray(points) || points.length === 0)
      throw new Error("train needs at least one [x, y] point");
    const xy = points.reduce((sum, [x, y]) => sum + x * y, 0);
    const xx = points.reduce((sum, [x]) => sum + x * x, 0);
    console.log(`training on ${points.length} points`);
    return { slope: xx === 0 ? 0 : xy / xx, points: points.length };
  },
  { retries: 1, timeout: 60 },
);

const servingApp = Fastify();
export const servingEnv = new FastifyAppEnvironment({
  name: "serving-app",
  app: servingApp,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
  dependsOn: [trainingEnv], // Can depend on task environments too
});

/** The model the app serves: the output of the last training run it asked for. */
let model: { slope: number; points: number } | undefined;

// Calls the task by reference: it runs in a training-env worker, not in this process.
servingApp.post<{ Body: { points?: [number, number][] } }>("/train", async (req) => {
  model = await run(train, req.body?.points ?? []);
  return model;
});
// The same task by id, as code that does not import its declaration would call it.
servingApp.post<{ Body: { points?: [number, number][] } }>("/train-by-id", async (req) => {
  model = await task<[[number, number][]], typeof model>("training-env.train").run(
    req.body?.points ?? [],
  );
  return model;
});
servingApp.get<{ Querystring: { x?: string } }>("/predict", async (req, reply) => {
  const x = Number(req.query.x);
  if (req.query.x === undefined || !Number.isFinite(x))
    return reply.code(400).send({ error: "give a number: /predict?x=3" });
  if (!model) return reply.code(409).send({ error: "no model yet: POST /train first" });
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
