// `node dist/scripts/healthcheck.js <service|gateway>`: the container image's health check. Run
// beside the process with the same environment, it asks what the launcher asks: a service's
// grpc.health.v1 on its own port (mTLS, or plaintext on loopback behind a sidecar, where health
// answers loopback probes), the gateway's /readyz. Exit 0 when serving, 1 otherwise.
import { join } from "node:path";
import { loadTls } from "../mesh/certs.js";
import { projectRoot } from "../mesh/project-root.js";
import { healthClient } from "../mesh/rpc/health-client.js";
import { appPort, gateway, serviceNames, type ServiceName } from "../mesh/topology.js";

const TIMEOUT_MS = 2_000;
const name = process.argv[2] ?? "";
const env = process.env;
// A process listening on every address answers on loopback too.
const listening = env.HOST && env.HOST !== "0.0.0.0" && env.HOST !== "::" ? env.HOST : "127.0.0.1";
const host = listening.includes(":") && !listening.startsWith("[") ? `[${listening}]` : listening; // IPv6 in a URL or target
const transport = env.MESH_TRANSPORT === "sidecar" ? "sidecar" : "mtls";

async function healthy(): Promise<boolean> {
  if (name === gateway.name) {
    const res = await fetch(`http://${host}:${env.PORT ?? gateway.httpPort}/readyz`, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    return res.ok;
  }
  if (!(serviceNames as string[]).includes(name)) throw new Error(`usage: healthcheck <${[...serviceNames, gateway.name].join("|")}>`);
  const tls = await loadTls(env.CERTS_DIR ?? join(projectRoot, "certs"), name);
  const client = healthClient(`${host}:${env.PORT ?? appPort(name as ServiceName, transport)}`, name, tls, transport);
  try {
    return (await client.check("", TIMEOUT_MS)) === "SERVING";
  } finally {
    client.close();
  }
}

healthy().then(
  (ok) => {
    if (!ok) console.error(`${name}: not serving`);
    process.exit(ok ? 0 : 1);
  },
  (err) => {
    console.error(`${name}: ${err instanceof Error ? err.message : err}`);
    process.exit(1);
  },
);
