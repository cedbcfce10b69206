// A service started in this process exactly as its main() starts it (startService), on free
// ports, with the database, NATS and Redis the test chooses.
import type { DescService } from "@bufbuild/protobuf";
import { startService, type ConfigSpec, type RunningService, type ServiceDefinition } from "../../mesh/service.js";
import type { TestPki } from "./pki.js";
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
