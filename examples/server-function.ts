/**
 * A server function: any Node.js server, here plain `node:http`. `env.server(fn)` starts it on
 * the given port (ready once the port answers); `onStartup` runs before it serves, with the
 * inputs by name; `onShutdown` runs when the app stops, after the server closed.
 */
import { createServer } from "node:http";
import { AppEnvironment, Image, Input, deploy, init } from "caravan-deploy";

export const env = new AppEnvironment({
  name: "plain-node-server",
  image: Image.fromDebianBase({ node: "22" }),
  requiresAuth: false,
  inputs: [new Input({ name: "motd", value: "Have a nice day" })],
});

const state = { startedAt: "", motd: "" };

env.onStartup(async ({ inputs }) => {
  // E.g. open connections or load a model; the app serves only once this is done.
  state.motd = String(inputs.motd);
  state.startedAt = new Date().toISOString();
});

env.server(async ({ port, host }) => {
  const server = createServer((req, res) => {
    res.setHeader("content-type", "application/json");
    res.end(JSON.stringify({ path: req.url, motd: state.motd, started: state.startedAt !== "" }));
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  return { close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
});

env.onShutdown(() => console.log("plain-node-server: closed, bye"));

if (import.meta.url === `file://${process.argv[1]}`) {
  await init({ rootDir: new URL(".", import.meta.url).pathname });
  const deployments = await deploy(env);
  for (const deployment of deployments) console.log(`Deployed: ${deployment.envRepr()}`);
}
