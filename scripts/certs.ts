// `npm run certs`: creates the dev CA and a certificate for every service, the gateway and the
// `client` identity (for buf curl, grpcurl and NATS tools) and nats-server's server certificate
// under certs/ (or CERTS_DIR), keeping whatever already exists.
//
// The compose setup's one-shot step (docker-compose.yml's `certs`) also asks, into its volumes:
//   --per-identity DIR  DIR/<identity>/{tls.crt,tls.key,ca.crt} for every certificate holder
//   --db-passwords DIR  DIR/<role>/password for PostgreSQL's superuser and each service's role
//   --owner UID:GID     who owns what those write (it runs as root to write into fresh volumes)
// (scripts/deploy/compose-secrets.ts says what each file is and who may read it.)
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ensureCerts } from "../mesh/certs.js";
import { projectRoot } from "../mesh/project-root.js";
import { certificateHolders, natsServerIdentity } from "../mesh/topology.js";
import { databaseRoles, ensurePassword, parseOwner, writeIdentityFolder } from "./deploy/compose-secrets.js";

const { values: args } = parseArgs({
  options: { "per-identity": { type: "string" }, "db-passwords": { type: "string" }, owner: { type: "string" } },
});
const owner = args.owner === undefined ? undefined : parseOwner(args.owner);

const dir = process.env.CERTS_DIR ?? join(projectRoot, "certs");
await ensureCerts(dir, certificateHolders, { serverOnly: [natsServerIdentity] });
console.log(`certificates for ${certificateHolders.join(", ")} are in ${dir}`);

const perIdentity = args["per-identity"];
if (perIdentity !== undefined) {
  for (const identity of certificateHolders) await writeIdentityFolder(dir, identity, join(perIdentity, identity), owner);
  console.log(`each identity's tls.crt, tls.key and ca.crt are in ${perIdentity}/<identity>`);
}
const passwords = args["db-passwords"];
if (passwords !== undefined) {
  for (const role of databaseRoles) await ensurePassword(join(passwords, role), owner);
  console.log(`database passwords for ${databaseRoles.join(", ")} are in ${passwords}/<role>/password`);
}
