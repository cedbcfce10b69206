// `npm run certs`: creates the dev CA and a certificate for every service, the gateway and the
// `client` identity (for buf curl, grpcurl and NATS tools) and nats-server's server certificate
// under certs/, keeping whatever already exists.
import { join } from "node:path";
import { ensureCerts } from "../mesh/certs.js";
import { projectRoot } from "../mesh/service.js";
import { certificateHolders, natsServerIdentity } from "../mesh/topology.js";

const dir = process.env.CERTS_DIR ?? join(projectRoot, "certs");
await ensureCerts(dir, certificateHolders, { serverOnly: [natsServerIdentity] });
console.log(`certificates for ${certificateHolders.join(", ")} are in ${dir}`);
