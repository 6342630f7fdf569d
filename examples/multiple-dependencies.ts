/**
 * The seed's multiple dependencies: api depends on backend and database. Both are deployed
 * (in parallel: neither depends on the other) and ready before api starts. api's
 * `/users/:id/profile` combines the user from database with that user's orders from backend.
 */
import Fastify from "fastify";
import { Image, deploy, init } from "caravan-deploy";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";

const image = Image.fromDebianBase({ node: "22" }).withNpmPackages("fastify");

interface User {
  id: string;
  name: string;
}
interface Order {
  id: number;
  userId: string;
  item: string;
}

const backendApp = Fastify();
export const backend = new FastifyAppEnvironment({
  name: "backend",
  app: backendApp,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
});

const databaseApp = Fastify();
export const database = new FastifyAppEnvironment({
  name: "database",
  app: databaseApp,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
});

const apiApp = Fastify();
export const api = new FastifyAppEnvironment({
  name: "api",
  app: apiApp,
  image,
  resources: { cpu: 1, memory: "512Mi" },
  requiresAuth: false,
  dependsOn: [backend, database], // Depends on both
});

// database: a tiny in-memory user table.
const users: User[] = [
  { id: "1", name: "Ada" },
  { id: "2", name: "Grace" },
];
databaseApp.get<{ Params: { id: string } }>("/users/:id", async (req, reply) => {
  const user = users.find((u) => u.id === req.params.id);
  return user ?? reply.code(404).send({ error: `no user ${req.params.id}` });
});

// backend: business data, the orders of a user.
const orders: Order[] = [
  { id: 1, userId: "1", item: "analytical engine" },
  { id: 2, userId: "1", item: "punched cards" },
  { id: 3, userId: "2", item: "compiler" },
];
backendApp.get<{ Querystring: { user: string } }>("/orders", async (req) =>
  orders.filter((o) => o.userId === req.query.user),
);

async function getJSON<T>(url: string): Promise<{ status: number; body: T }> {
  const res = await fetch(url);
  return { status: res.status, body: (await res.json()) as T };
}

// api: one answer made of both dependencies' answers.
apiApp.get<{ Params: { id: string } }>("/users/:id/profile", async (req, reply) => {
  const id = encodeURIComponent(req.params.id);
  const [user, userOrders] = await Promise.all([
    getJSON<User>(`${database.endpoint}/users/${id}`),
    getJSON<Order[]>(`${backend.endpoint}/orders?user=${id}`),
  ]);
  if (user.status === 404) return reply.code(404).send({ error: `no user ${req.params.id}` });
  if (user.status !== 200 || userOrders.status !== 200)
    throw new Error(`database answered ${user.status}, backend answered ${userOrders.status}`);
  return { user: user.body, orders: userOrders.body.map((o) => o.item) };
});

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  // backend and database first (in parallel), then api.
  const deployments = await deploy(api);
  for (const deployment of deployments) console.log(`Deployed: ${deployment.envRepr()}`);
}
