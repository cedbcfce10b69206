// One process hosting several services: `node dist/launcher/host.js identity catalog …` (all six
// when none is named). The combined layout of `npm start` (launcher/layout.ts) runs the services
// this way; deployments keep one process per service (services/<name>/main.ts).
//
// Each service keeps what it has in a process of its own: its ports, database, NATS connection,
// logger (every line carries `service`), metrics registry and spans (launcher/host-tracing.ts).
// They share the event loop, the heap and one copy of the code. A variable `<SERVICE>__<NAME>`
// is `<NAME>` for that service alone (ORDER__PORT=50054): what differs between them.
//
// Like a service's own process: SIGTERM, SIGINT or the end of stdin (under the launcher) drain and
// stop every service, then exit 0; a configuration error of any of them stops the others, prints
// `host: configuration error: <service>: …` and exits 78. A crash of one takes the process down,
// and the launcher restarts them together.
import { fileURLToPath } from "node:url";
import type { DescService } from "@bufbuild/protobuf";
import { ConfigError } from "../mesh/config.js";
import { runProcess, startService, type ConfigSpec, type RunningService, type ServiceDefinition } from "../mesh/service.js";
import { serviceNames, type ServiceName } from "../mesh/topology.js";
import { catalog } from "../services/catalog/catalog.js";
import { identity } from "../services/identity/identity.js";
import { inventory } from "../services/inventory/inventory.js";
import { notification } from "../services/notification/notification.js";
import { order } from "../services/order/order.js";
import { payment } from "../services/payment/payment.js";
import { installHostTracing } from "./host-tracing.js";

const definitions: Record<ServiceName, ServiceDefinition<DescService, ConfigSpec>> = { identity, catalog, inventory, order, payment, notification } as never;

/** process.env, with `<SERVICE>__<NAME>` as `<NAME>` for this service. */
function serviceEnv(name: ServiceName, source: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const prefix = `${name.toUpperCase()}__`;
  const own = Object.entries(source).filter(([key]) => key.startsWith(prefix)).map(([key, value]) => [key.slice(prefix.length), value]);
  return { ...source, ...Object.fromEntries(own) };
}

// A definition finds its migrations beside its own module, which a bundle moves into a shared
// chunk; this file sits one folder below the root in the sources and in dist/ alike.
const migrationsOf = (name: ServiceName) => fileURLToPath(new URL(`../services/${name}/migrations`, import.meta.url));

async function startHosted(names: readonly ServiceName[]): Promise<{ stop(): Promise<void> }> {
  const tracing = installHostTracing(names, "host"); // before any service installs its own
  const results = await Promise.allSettled(names.map((name) => startService({ ...definitions[name], migrations: migrationsOf(name) }, serviceEnv(name))));
  const running = results.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const stop = async () => {
    await Promise.all(running.map((s: RunningService) => s.stop()));
    await tracing.shutdown(); // after the services: their last spans go out with it
  };
  const failures = results.flatMap((r, i) => (r.status === "rejected" ? [{ name: names[i]!, err: r.reason as unknown }] : []));
  if (failures.length === 0) return { stop };
  await stop();
  const config = failures.find((f) => f.err instanceof ConfigError);
  if (config) throw new ConfigError(`${config.name}: ${(config.err as Error).message}`);
  throw failures[0]!.err;
}

const asked = process.argv.slice(2);
await runProcess("host", async () => {
  const unknown = asked.filter((name) => !(serviceNames as string[]).includes(name));
  if (unknown.length) throw new ConfigError(`no service named ${unknown.join(", ")} (services: ${serviceNames.join(", ")})`);
  return startHosted(asked.length ? (asked as ServiceName[]) : serviceNames);
});
