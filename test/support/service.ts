// A service started in this process exactly as its main() starts it (startService), on free
// ports, with the database, NATS and Redis the test chooses.
import type { DescService } from "@bufbuild/protobuf";
import { connect, type JetStreamClient, type JetStreamManager } from "nats";
import type { MeshClient } from "../../mesh/client.js";
import { startService, type ConfigSpec, type RunningService, type ServiceDefinition } from "../../mesh/service.js";
import { createTestPki, type TestPki } from "./pki.js";
import { startNats, type TestServer } from "./processes.js";
import { clientFor } from "./servers.js";

export interface ServiceUnderTest<S extends DescService> extends RunningService {
  address: string;
  client(as?: string): ReturnType<typeof clientFor<S>>;
}

export async function startTestService<S extends DescService, C extends ConfigSpec>(
  def: ServiceDefinition<S, C>,
  pki: TestPki,
  env: Record<string, string>,
): Promise<ServiceUnderTest<S>> {
  const running = await startService(def, {
    PORT: "0",
    METRICS_PORT: "0",
    CERTS_DIR: await pki.dir([def.name]),
    LOG_LEVEL: "silent",
    DATA_DIR: "memory://",
    ...env,
  });
  const address = `127.0.0.1:${running.port}`;
  return { ...running, address, client: (as = "client") => clientFor(pki, def.service, def.name, [address], { as }) };
}

/** One service against its own real nats-server, with a NATS connection for the test to publish and read events. */
export interface ServiceWithNats<S extends DescService> {
  nats: TestServer;
  js: JetStreamClient;
  jsm: JetStreamManager;
  svc: ServiceUnderTest<S>;
  /** Calls as a service (no end user) and as the gateway (for user metadata). */
  client: MeshClient<S>;
  gateway: MeshClient<S>;
  stop(): Promise<void>;
}

export async function startWithNats<S extends DescService, C extends ConfigSpec>(def: ServiceDefinition<S, C>, env: Record<string, string> = {}): Promise<ServiceWithNats<S>> {
  const nats = await startNats();
  const svc = await startTestService(def, await createTestPki(), { NATS_URL: nats.url, ...env });
  await svc.eventing.ready; // its streams, and those of the events it consumes, now exist
  const nc = await connect({ servers: nats.url });
  const [client, gateway] = [await svc.client(), await svc.client("gateway")];
  return {
    nats,
    js: nc.jetstream(),
    jsm: await nc.jetstreamManager(),
    svc,
    client,
    gateway,
    async stop() {
      client.close();
      gateway.close();
      await svc.stop();
      await nc.close();
      await nats.stop();
    },
  };
}
