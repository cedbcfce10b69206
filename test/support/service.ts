// A service started in this process exactly as its main() starts it (startService), on free
// ports, with the database, NATS and Redis the test chooses.
import type { DescService } from "@bufbuild/protobuf";
import type { JetStreamClient, JetStreamManager } from "nats";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { ensureStreams } from "../../mesh/events/events.js";
import { startService, type ConfigSpec, type RunningService, type ServiceDefinition } from "../../mesh/service.js";
import { ownerOfSubject, topology } from "../../mesh/topology.js";
import { createTestPki, type TestPki } from "./pki.js";
import { startNats, type NatsTestServer } from "./processes.js";
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
  nats: NatsTestServer;
  js: JetStreamClient;
  jsm: JetStreamManager;
  svc: ServiceUnderTest<S>;
  /** Calls as a service (no end user) and as the gateway (for user metadata). */
  client: MeshClient<S>;
  gateway: MeshClient<S>;
  stop(): Promise<void>;
}

export async function startWithNats<S extends DescService, C extends ConfigSpec>(def: ServiceDefinition<S, C>, env: Record<string, string> = {}): Promise<ServiceWithNats<S>> {
  const pki = await createTestPki();
  const nats = await startNats(pki);
  // The test's own connection is the operator's. It creates the streams the service consumes, as
  // their owners would if they ran: a consumer waits for its stream's owner.
  const nc = await nats.connect();
  const jsm = await nc.jetstreamManager();
  for (const owner of new Set(Object.values(topology[def.name].consumes).map(ownerOfSubject))) {
    if (owner) await ensureStreams(jsm, owner, topology[owner].eventSubjects, { deadLetters: false });
  }
  const svc = await startTestService(def, pki, { NATS_URL: nats.url, ...env });
  await svc.eventing.ready; // its stream, and its consumers on the streams it consumes, now exist
  const [client, gateway] = [await svc.client(), await svc.client("gateway")];
  return {
    nats,
    js: nc.jetstream(),
    jsm,
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
