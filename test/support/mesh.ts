// The whole mesh in this process: every service as its main() would start it, sharing one real
// nats-server and redis-server, each with its own embedded database. Services named in `sidecars`
// run as in a pod (MESH_TRANSPORT=sidecar) behind a test sidecar (sidecar-proxy.ts) that lets in
// the callers the topology names (plus the "client" identity, as the dev overlay does).
import type { DescService } from "@bufbuild/protobuf";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { headers } from "../../mesh/rpc/call-scope.js";
import { catalog } from "../../services/catalog/catalog.js";
import { identity } from "../../services/identity/identity.js";
import { inventory } from "../../services/inventory/inventory.js";
import { notification } from "../../services/notification/notification.js";
import { order } from "../../services/order/order.js";
import { payment } from "../../services/payment/payment.js";
import { createTestPki, type TestPki } from "./pki.js";
import { startNats, startRedis, type NatsTestServer, type TestServer } from "./processes.js";
import { clientFor } from "./servers.js";
import { startTestService, type ServiceUnderTest } from "./service.js";
import { startTestSidecar } from "./sidecar-proxy.js";
import type { ConfigSpec, ServiceDefinition } from "../../mesh/service.js";
import { publicServices } from "../../gateway/upstreams.js";
import { callersOf } from "../../scripts/deploy/envoy.js";

type MeshServiceName = "identity" | "catalog" | "inventory" | "order" | "payment" | "notification";

export interface TestMesh {
  pki: TestPki;
  /** Its connect() is the operator's connection, for tests to publish and read events. */
  nats: NatsTestServer;
  redis: TestServer;
  services: Record<MeshServiceName, ServiceUnderTest<DescService>>;
  /** A client calling `service` as the gateway would, for the end user `userId` (and roles). */
  as<S extends DescService>(service: S, name: keyof TestMesh["services"], userId?: string, roles?: string): Promise<MeshClient<S> & { close(): void }>;
  /** Stops one service as if it were down: its events wait in NATS until startService(name). */
  stopService(name: MeshServiceName): Promise<void>;
  /**
   * Starts a new instance of a stopped service, with a fresh in-memory database, on a new port (make
   * clients with as() afterwards); it resumes its durable consumers where the old one left off.
   */
  startService(name: MeshServiceName): Promise<void>;
  stop(): Promise<void>;
}

export interface MeshOptions {
  /** Extra environment per service, e.g. { order: { ORDER_TIMEOUT_SECONDS: "2" } }. */
  env?: Partial<Record<MeshServiceName, Record<string, string>>>;
  /** Services that run behind a sidecar; the others speak mTLS themselves. */
  sidecars?: readonly MeshServiceName[];
}

export async function startMesh(opts: MeshOptions = {}): Promise<TestMesh> {
  const pki = await createTestPki();
  const [nats, redis] = await Promise.all([startNats(pki), startRedis()]);
  const common = { NATS_URL: nats.url, REDIS_URL: redis.url };
  const envOf = (name: MeshServiceName) => ({ ...common, ...opts.env?.[name] });
  const definitions = { identity, catalog, inventory, order, payment, notification } as const;
  const publicNames = publicServices.map(([, name]) => name);
  /** Starts `name`, its upstreams at `upstreams` (name → address), behind a sidecar if the options say so. */
  const start = async (name: MeshServiceName, upstreams: Partial<Record<MeshServiceName, string>> = {}): Promise<ServiceUnderTest<DescService>> => {
    const def = definitions[name] as ServiceDefinition<DescService, ConfigSpec>;
    const addresses = (of: Record<string, string>) => Object.fromEntries(Object.entries(of).map(([up, a]) => [`${up.toUpperCase()}_ADDRESSES`, a]));
    if (!opts.sidecars?.includes(name)) return startTestService(def, pki, { ...envOf(name), ...addresses(upstreams as Record<string, string>) });
    const sidecar = await startTestSidecar(pki, name, { appPort: 0, callers: [...callersOf(name, publicNames), "client"] });
    const outbound: Record<string, string> = {};
    for (const [up, address] of Object.entries(upstreams)) outbound[up] = await sidecar.outbound(up, address);
    const svc = await startTestService(def, pki, { ...envOf(name), MESH_TRANSPORT: "sidecar", ...addresses(outbound) });
    sidecar.appPort = svc.port;
    const address = sidecar.inboundAddress;
    return { ...svc, address, client: (as = "client") => clientFor(pki, def.service, name, [address], { as }), stop: async () => (await svc.stop(), await sidecar.close()) };
  };
  const [identitySvc, catalogSvc, inventorySvc, paymentSvc, notificationSvc] = await Promise.all(
    (["identity", "catalog", "inventory", "payment", "notification"] as const).map((name) => start(name)),
  );
  const orderSvc = await start("order", { catalog: catalogSvc!.address });
  const services = { identity: identitySvc, catalog: catalogSvc, inventory: inventorySvc, order: orderSvc, payment: paymentSvc, notification: notificationSvc } as TestMesh["services"];
  await Promise.all(Object.values(services).map((s) => s.eventing.ready));
  const opened: { close(): void }[] = [];
  const stopped = new Set<MeshServiceName>();
  return {
    pki,
    nats,
    redis,
    services,
    async as(service, name, userId, roles = "customer") {
      const client = await clientFor(pki, service, name, [services[name].address], { as: "gateway" });
      opened.push(client);
      if (!userId) return client;
      // Every call carries the user, as the gateway adds it from a verified token.
      const user = { [headers.userId]: userId, [headers.userRoles]: roles };
      return new Proxy(client, {
        get: (target, prop) => {
          const fn = (target as Record<string | symbol, unknown>)[prop];
          if (typeof fn !== "function" || prop === "close") return fn;
          return (req: unknown, opts: { headers?: Record<string, string> } = {}) => (fn as (...a: unknown[]) => unknown)(req, { ...opts, headers: { ...user, ...opts.headers } });
        },
      });
    },
    async stopService(name) {
      stopped.add(name);
      await services[name].stop();
    },
    async startService(name) {
      const svc = await start(name, name === "order" ? { catalog: services.catalog.address } : {});
      await svc.eventing.ready;
      services[name] = svc as ServiceUnderTest<DescService>;
      stopped.delete(name);
    },
    async stop() {
      opened.forEach((c) => c.close());
      await Promise.all((Object.keys(services) as MeshServiceName[]).filter((n) => !stopped.has(n)).map((n) => services[n].stop()));
      await Promise.all([nats.stop(), redis.stop()]);
    },
  };
}
