// docker-compose.yml and what it mounts (deploy/compose/), generated from the topology. `docker
// compose up` runs the whole shop on one machine, with the same sidecars as Kubernetes:
// - per service, and for the gateway, two containers sharing one network namespace: `<name>-mesh`
//   (Envoy, envoy/<name>.yaml) owns it and carries the network alias `<name>`, so callers reach
//   Envoy's inbound mTLS port; the app joins it (network_mode service:<name>-mesh) and listens on
//   loopback only (MESH_TRANSPORT=sidecar). Envoy restarts less often than the app: when the owner
//   of a namespace restarts, the containers that joined it lose their network.
// - a one-shot `certs` step (the same image, scripts/certs.ts) writes the CA, each identity's
//   tls.crt/tls.key/ca.crt and the database passwords, each into its own volume, so a container
//   mounts only its own secrets (scripts/deploy/compose-secrets.ts).
// - PostgreSQL with a role and a database per service, NATS with JetStream and the configuration
//   mesh/events/nats-config.ts generates (TLS, a user per SPIFFE id), Redis.
// Nothing is published but the gateway's port, on localhost.
import { publicServices } from "../../gateway/upstreams.js";
import { natsServerConfig } from "../../mesh/events/nats-config.js";
import { appPort, certificateHolders, gateway, natsServerIdentity, serviceNames, sidecar, topology, type ServiceName } from "../../mesh/topology.js";
import { databaseRoles, IMAGE_USER, SUPERUSER } from "./compose-secrets.js";
import { SDS_DIR } from "./envoy.js";
import { yamlFile } from "./files.js";
import { images } from "./images.js";



/** Where things are, inside the containers. */
export const paths = {
  /** The certs step's view: the CA folder, and one mounted volume per identity and per database role. */
  caDir: "/pki/ca",
  identityRoot: "/pki/tls",
  passwordRoot: "/pki/db",
  /** An app's own certificate folder (CERTS_DIR), and its database password's folder. */
  appTls: "/run/shopmesh/tls",
  appDb: "/run/shopmesh/db",
  /** PostgreSQL's view of every role's password folder. */
  postgresPasswords: "/run/shopmesh/db",
  natsConfig: "/etc/nats/nats.conf",
  natsTls: "/etc/nats/tls",
  natsStore: "/data",
  envoyConfig: "/etc/envoy/envoy.yaml",
  envoyCerts: `${SDS_DIR}/certs`,
} as const;

/** Generated files docker-compose.yml mounts, beside it. */
export const mountedFiles = { natsConfig: "deploy/compose/nats.conf", postgresInit: "deploy/compose/postgres-init.sql" } as const;

export const infraPorts = { postgres: 5432, nats: 4222, natsMonitoring: 8222, redis: 6379 } as const;

type Service = Record<string, unknown>;
type ServiceTarget = ServiceName | "gateway";

const tlsVolume = (identity: string) => `tls-${identity}`;
const dbVolume = (role: string) => `db-${role}`;
const volume = (source: string, target: string, readOnly = false) => ({ type: "volume", source, target, ...(readOnly ? { read_only: true } : {}) });
const bind = (source: string, target: string) => ({ type: "bind", source: `./${source}`, target, read_only: true });

/** Probe timings: often enough that `depends_on: service_healthy` does not hold the start for long. */
const healthcheck = (test: string[], { interval = "5s", startPeriod = "30s" } = {}) => ({ test: ["CMD", ...test], interval, timeout: "3s", retries: 5, start_period: startPeriod });
// Fresh objects each time: a shared one would come out as a YAML anchor and alias.
const completed = () => ({ condition: "service_completed_successfully" });
const healthy = () => ({ condition: "service_healthy" });
const longRunning = { restart: "unless-stopped" } as const;

/** Kubernetes quantities (Mi, Gi) as Docker's byte units (m, g are binary there too). */
const dockerMemory = (quantity: string) => quantity.replace(/^(\d+)([MG])i$/, (_, n: string, unit: string) => `${n}${unit.toLowerCase()}`);

/** The one-shot step writing the CA, each identity's certificate folder and the database passwords, as root into fresh volumes, owned by the image's user. */
function certsService(): Service {
  return {
    image: images.shopmesh,
    build: { context: "." },
    user: "root",
    command: ["node", "dist/scripts/certs.js", "--per-identity", paths.identityRoot, "--db-passwords", paths.passwordRoot, `--owner=${IMAGE_USER.uid}:${IMAGE_USER.gid}`],
    environment: { CERTS_DIR: paths.caDir },
    volumes: [
      volume("ca", paths.caDir),
      ...certificateHolders.map((identity) => volume(tlsVolume(identity), `${paths.identityRoot}/${identity}`)),
      ...databaseRoles.map((role) => volume(dbVolume(role), `${paths.passwordRoot}/${role}`)),
    ],
  };
}

function postgresService(): Service {
  return {
    image: images.postgres,
    // Its own user, with the secrets' group: the password files are not readable by others.
    user: `postgres:${IMAGE_USER.gid}`,
    environment: { POSTGRES_PASSWORD_FILE: `${paths.postgresPasswords}/${SUPERUSER}/password` },
    volumes: [
      volume("postgres-data", "/var/lib/postgresql/data"),
      bind(mountedFiles.postgresInit, "/docker-entrypoint-initdb.d/shopmesh.sql"),
      ...databaseRoles.map((role) => volume(dbVolume(role), `${paths.postgresPasswords}/${role}`, true)),
    ],
    // Over TCP: during its first start the image runs a temporary server on the socket only.
    healthcheck: healthcheck(["pg_isready", "-h", "127.0.0.1", "-U", SUPERUSER, "-d", "postgres"]),
    depends_on: { certs: completed() },
    ...longRunning,
  };
}

function natsService(): Service {
  return {
    image: images.nats,
    command: ["nats-server", "-c", paths.natsConfig, "-js", "-sd", paths.natsStore, "-m", String(infraPorts.natsMonitoring)],
    volumes: [bind(mountedFiles.natsConfig, paths.natsConfig), volume(tlsVolume(natsServerIdentity), paths.natsTls, true), volume("nats-data", paths.natsStore)],
    healthcheck: healthcheck(["wget", "-q", "-O", "/dev/null", `http://127.0.0.1:${infraPorts.natsMonitoring}/healthz?js-enabled-only=true`]),
    depends_on: { certs: completed() },
    ...longRunning,
  };
}

/** A cache and rate-limit counters: nothing to keep across restarts. */
function redisService(): Service {
  return {
    image: images.redis,
    command: ["redis-server", "--save", ""],
    healthcheck: healthcheck(["redis-cli", "ping"]),
    ...longRunning,
  };
}

/** The image has no curl: bash asks Envoy's ops listener for /ready (200 once its listeners are up). */
const envoyReady = `exec 3<>/dev/tcp/127.0.0.1/${sidecar.opsPort} && printf 'GET /ready HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && grep -q '^HTTP/1.1 200' <&3`;

/** `<name>-mesh`: the Envoy sidecar, owner of the pair's network namespace. */
function meshService(name: ServiceTarget): Service {
  return {
    image: images.envoy,
    command: ["envoy", "-c", paths.envoyConfig],
    // The image's entrypoint gives its envoy user this group: it reads the key, others cannot.
    environment: { ENVOY_GID: String(IMAGE_USER.gid) },
    networks: { default: { aliases: [name] } },
    ...(name === "gateway" ? { ports: [{ target: gateway.httpPort, published: gateway.httpPort, host_ip: "127.0.0.1", protocol: "tcp" }] } : {}),
    volumes: [
      bind(`envoy/${name}.yaml`, paths.envoyConfig),
      // The two SDS files one by one: the certificate volume is mounted in their folder.
      ...["tls-certificate", "validation-context"].map((secret) => bind(`envoy/sds/${secret}.yaml`, `${SDS_DIR}/${secret}.yaml`)),
      volume(tlsVolume(name), paths.envoyCerts, true),
    ],
    healthcheck: healthcheck(["bash", "-c", envoyReady], { startPeriod: "10s" }),
    depends_on: { certs: completed() },
    mem_limit: dockerMemory(sidecar.resources.memoryLimit),
    ...longRunning,
  };
}

/** What every app shares: its sidecar's namespace, its certificate, metrics open to the network, its health check. */
function appBase(name: ServiceTarget, command: string, env: Record<string, string>, dependsOn: Record<string, { condition: string }>, memoryLimit: string): Service {
  return {
    image: images.shopmesh,
    command: ["node", command],
    network_mode: `service:${name}-mesh`,
    environment: { SHOPMESH_PROCESS: name, MESH_TRANSPORT: "sidecar", METRICS_HOST: "0.0.0.0", CERTS_DIR: paths.appTls, LOG_LEVEL: "info", ...env },
    volumes: [volume(tlsVolume(name), paths.appTls, true), ...(name === "gateway" ? [] : [volume(dbVolume(name), paths.appDb, true)])],
    // A check starts a node process: every 10 s, not 5, for seven apps.
    healthcheck: healthcheck(["node", "dist/scripts/healthcheck.js", name], { interval: "10s", startPeriod: "60s" }),
    depends_on: { [`${name}-mesh`]: healthy(), certs: completed(), ...dependsOn },
    mem_limit: dockerMemory(memoryLimit),
    security_opt: ["no-new-privileges:true"],
    // The app drains its calls for up to 10 s (DRAIN_TIMEOUT_MS) after SIGTERM.
    stop_grace_period: "15s",
    ...longRunning,
  };
}

const redisUrl = `redis://redis:${infraPorts.redis}`;
/** Services whose config reads REDIS_URL. */
const usesRedis: readonly ServiceName[] = ["catalog"];

function serviceApp(name: ServiceName): Service {
  const spec = topology[name];
  const env: Record<string, string> = {
    HOST: "127.0.0.1",
    PORT: String(appPort(name, "sidecar")),
    METRICS_PORT: String(spec.metricsPort),
    NATS_URL: `tls://nats:${infraPorts.nats}`,
    // The password comes from the file, merged in by the service (mesh/service.ts).
    DATABASE_URL: `postgres://${name}@postgres:${infraPorts.postgres}/${name}`,
    DATABASE_PASSWORD_FILE: `${paths.appDb}/password`,
    ...(usesRedis.includes(name) ? { REDIS_URL: redisUrl } : {}),
  };
  const dependsOn = {
    postgres: healthy(),
    nats: healthy(),
    ...(usesRedis.includes(name) ? { redis: healthy() } : {}),
    ...Object.fromEntries(spec.upstreams.map((upstream) => [upstream, healthy()])),
  };
  return appBase(name, `dist/services/${name}/main.js`, env, dependsOn, spec.resources.memoryLimit);
}

/** The gateway serves the public port itself, on every address of the namespace its sidecar owns. */
function gatewayApp(): Service {
  // NATS: the events that invalidate its cache of public reads.
  const env = { HOST: "0.0.0.0", PORT: String(gateway.httpPort), METRICS_PORT: String(gateway.metricsPort), REDIS_URL: redisUrl, NATS_URL: `tls://nats:${infraPorts.nats}` };
  const dependsOn = { redis: healthy(), nats: healthy(), ...Object.fromEntries(publicServices.map(([, name]) => [name, healthy()])) };
  return appBase("gateway", "dist/gateway/main.js", env, dependsOn, gateway.resources.memoryLimit);
}

/** The compose document. */
export function composeDocument(): { services: Record<string, Service>; volumes: Record<string, Service> } {
  const services: Record<string, Service> = { certs: certsService(), postgres: postgresService(), nats: natsService(), redis: redisService() };
  for (const name of serviceNames) Object.assign(services, { [`${name}-mesh`]: meshService(name), [name]: serviceApp(name) });
  Object.assign(services, { "gateway-mesh": meshService("gateway"), gateway: gatewayApp() });
  const volumes = ["ca", ...certificateHolders.map(tlsVolume), ...databaseRoles.map(dbVolume), "postgres-data", "nats-data"];
  return { services, volumes: Object.fromEntries(volumes.map((v) => [v, {}])) };
}

/** The NATS configuration compose mounts: the topology's users and permissions, TLS with nats's own certificate. */
export const composeNatsConfig = () =>
  natsServerConfig({
    host: "0.0.0.0",
    port: infraPorts.nats,
    storeDir: paths.natsStore,
    tlsFiles: { ca: `${paths.natsTls}/ca.crt`, cert: `${paths.natsTls}/tls.crt`, key: `${paths.natsTls}/tls.key` },
  });

/**
 * Run by the postgres image once, on an empty data volume (psql, as the superuser): per service a
 * role that logs in with the password the certs step wrote, and a database it owns that no other
 * role may connect to. psql reads each password from its file (`\set` with backquotes), so it is
 * on no command line.
 */
export function postgresInitSql(): string {
  const perService = serviceNames.map((name) => [
    `\\set name ${name}`,
    `\\set password \`cat ${paths.postgresPasswords}/${name}/password\``,
    `CREATE ROLE :"name" LOGIN PASSWORD :'password';`,
    `CREATE DATABASE :"name" OWNER :"name";`,
    `REVOKE ALL ON DATABASE :"name" FROM PUBLIC;`,
  ].join("\n"));
  return `-- Generated by \`npm run deploy:gen\` from mesh/topology.ts. Do not edit.\n\\set ON_ERROR_STOP on\n\n${perService.join("\n\n")}\n`;
}

export function composeFiles(): Record<string, string> {
  return {
    "docker-compose.yml": yamlFile(composeDocument()),
    [mountedFiles.natsConfig]: composeNatsConfig(),
    [mountedFiles.postgresInit]: postgresInitSql(),
  };
}
