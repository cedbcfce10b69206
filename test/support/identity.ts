// The identity service started in this process exactly as its main() starts it (startService),
// on free ports, against the database the test chooses.
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { startService, type RunningService } from "../../mesh/service.js";
import { identity } from "../../services/identity/identity.js";
import type { TestPki } from "./pki.js";
import { clientFor } from "./servers.js";

export interface IdentityUnderTest extends RunningService {
  address: string;
  client(as?: string): ReturnType<typeof clientFor<typeof IdentityService>>;
}

export async function startIdentity(pki: TestPki, env: Record<string, string>): Promise<IdentityUnderTest> {
  const certs = await pki.dir(["identity"]);
  const running = await startService(identity, {
    PORT: "0",
    METRICS_PORT: "0",
    CERTS_DIR: certs,
    LOG_LEVEL: "silent",
    SCRYPT_LOG2_N: "12", // cheaper hashes keep the suite fast; production default is 15
    DATA_DIR: "memory://",
    ...env,
  });
  const address = `127.0.0.1:${running.port}`;
  return { ...running, address, client: (as = "client") => clientFor(pki, IdentityService, "identity", [address], { as }) };
}
