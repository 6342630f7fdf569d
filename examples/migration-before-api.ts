/**
 * A one-shot dependency: a migration job that must succeed before the API that needs its
 * schema starts. The job runs again only when it changes (its code, arguments, inputs);
 * `caravan job rerun migrate-users-db` runs it anyway. The "database" here is a JSON file.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Fastify from "fastify";
import { JobEnvironment, deploy, init } from "caravan-deploy";
import { FastifyAppEnvironment } from "caravan-deploy/fastify";

// Declared where the deploy runs; the job and the app get it as a variable.
const DB_FILE = process.env.USERS_DB_FILE ?? join(tmpdir(), "caravan-example-users-db.json");

export const migrate = new JobEnvironment({
  name: "migrate-users-db",
  envVars: { USERS_DB_FILE: DB_FILE },
  timeouts: { run: 60 },
  run: async () => {
    // Idempotent, as a migration should be: the schema it leaves is the same every time.
    writeFileSync(
      DB_FILE,
      JSON.stringify({
        schemaVersion: 2,
        users: [{ id: 1, name: "Ada", email: "ada@example.com" }],
      }),
    );
    console.log(`migrated ${DB_FILE} to schema 2`);
  },
});

const app = Fastify();
export const api = new FastifyAppEnvironment({
  name: "users-api",
  app,
  requiresAuth: false,
  envVars: { USERS_DB_FILE: DB_FILE },
  dependsOn: [migrate],
});

let db: { schemaVersion: number; users: { id: number; name: string; email: string }[] };
// Runs before the first request: the migration has completed by then.
api.onStartup(() => {
  db = JSON.parse(readFileSync(DB_FILE, "utf8"));
});
app.get("/schema", async () => ({ schemaVersion: db.schemaVersion }));
app.get("/users", async () => db.users);

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  const deployments = await deploy(api);
  console.log(`Deployed: ${deployments[0]!.envRepr()}`);
}
