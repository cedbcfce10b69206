// The life of one service process, shared by every service: read and check config, open its
// database and apply its migrations, serve its handlers with the mesh runtime, expose metrics,
// and on SIGTERM/SIGINT drain calls and close everything. A service provides only its name,
// contract, config, migrations and handlers.
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { projectRoot } from "./project-root.js";
import type { Server } from "node:http";
import type { DescService } from "@bufbuild/protobuf";
import type { ServiceImpl } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import { loadTls } from "./certs.js";
import { createClient, type MeshClient } from "./rpc/client.js";
import { ConfigError, env, loadConfig } from "./config.js";
import { meshMigrations, migrate, openDb, type Db } from "./data/db.js";
import { startEventing, type Eventing, type EventHandlerSpec } from "./events/eventing.js";
import { startPeriodic } from "./periodic.js";
import { serve } from "./rpc/serve.js";
import { createLogger, createMetricsRegistry, initTracing, serveMetrics, shutdownTracing, type Logger } from "./telemetry.js";
import { appPort, topology, type ServiceName, type ServiceSpec } from "./topology.js";
import { keepInvalidated as keepCacheInvalidated, type KeptCache } from "./invalidation/invalidation-feed.js";
import { checkListenHost, transportModes } from "./rpc/transport.js";

export { projectRoot };

export type ConfigSpec = Parameters<typeof loadConfig>[0];
type ConfigOf<S extends ConfigSpec> = ReturnType<typeof loadConfig<S>>;

export interface ServiceDefinition<S extends DescService, C extends ConfigSpec> {
  name: ServiceName;
  service: S;
  /** Folder of this service's .sql migrations. */
  migrations: string;
  /** The service's own environment variables, beyond the common ones. */
  config: C;
  handlers(deps: ServiceDeps<C>): Promise<ServiceImpl<S>> | ServiceImpl<S>;
  /** The events this service reacts to (each applied once through the inbox; see EventHandlerSpec). */
  consumers?(deps: ServiceDeps<C>): EventHandlerSpec[];
}

export interface ServiceDeps<C extends ConfigSpec> {
  db: Db;
  logger: Logger;
  metrics: Registry;
  config: ConfigOf<C>;
  /** Registers cleanup to run when the service stops (after its calls and consumers have drained). */
  onStop(cleanup: () => Promise<void> | void): void;
  /**
   * Runs `job` every `intervalMs` (never overlapping itself) until the service stops. Every replica
   * runs it: see mesh/periodic.ts for what that asks of a job.
   */
  every(name: string, intervalMs: number, job: () => Promise<unknown>): void;
  /**
   * A typed client for an upstream listed in the topology, at <UPSTREAM>_ADDRESSES (comma-separated
   * host:port; default: its local port, which behind a sidecar is the sidecar's listener for it),
   * over mTLS as this service or through the sidecar. Closed when the service stops.
   */
  upstream<U extends DescService>(service: U, name: ServiceName): MeshClient<U>;
  /**
   * Keeps `cache` correct by the events the topology says invalidate it (cacheInvalidatedBy),
   * received on a NATS connection of this service's own: off until they surely arrive, cleared by
   * each one before `announced` sees it. Stopped with the service.
   */
  keepInvalidated(cache: KeptCache, announced?: (subject: string, payload: Uint8Array) => void): void;
}

export interface RunningService {
  port: number;
  metricsPort: number;
  db: Db;
  eventing: Eventing;
  stop(): Promise<void>;
}

function commonConfig(name: ServiceName, source: NodeJS.ProcessEnv) {
  const spec = topology[name];
  return {
    // "sidecar": an Envoy beside the process speaks mTLS for it (mesh/rpc/transport.ts); the app
    // then listens on loopback at grpcPort + appPortOffset, and Envoy on grpcPort.
    MESH_TRANSPORT: env.oneOf(transportModes, "mtls"),
    HOST: env.string("127.0.0.1"),
    PORT: env.port(appPort(name, source.MESH_TRANSPORT === "sidecar" ? "sidecar" : "mtls")),
    METRICS_PORT: env.port(spec.metricsPort),
    // Where Prometheus scrapes: in a container the metrics port is open while gRPC stays on loopback.
    METRICS_HOST: env.optional(),
    DATABASE_URL: env.url(["postgres:", "postgresql:"]),
    // A file holding the database password (a mounted secret), so it is in no environment or file of the repo.
    DATABASE_PASSWORD_FILE: env.optional(),
    DATA_DIR: env.string(join(projectRoot, ".data", name)),
    CERTS_DIR: env.string(join(projectRoot, "certs")),
    DRAIN_TIMEOUT_MS: env.int(10_000),
    // nats:// and tls:// mean the same here: a service always connects with TLS and its certificate.
    NATS_URL: env.url(["nats:", "tls:"]),
    // How long (hours) and how much (MiB) streams keep events and dead letters.
    EVENTS_MAX_AGE_HOURS: env.int(7 * 24, 1),
    EVENTS_MAX_MB: env.int(1024, 1),
    DEAD_LETTERS_MAX_AGE_HOURS: env.int(30 * 24, 1),
    // Copies of each stream NATS keeps: 3 on a three-node JetStream cluster, so a node can be lost.
    EVENTS_REPLICAS: env.int(1, 1),
  };
}

/** Starts a service in this process; `source` replaces process.env (tests). */
export async function startService<S extends DescService, C extends ConfigSpec>(
  def: ServiceDefinition<S, C>,
  source: NodeJS.ProcessEnv = process.env,
): Promise<RunningService> {
  if ((def.service as DescService) !== topology[def.name].contract) throw new Error(`${def.name} serves ${def.service.typeName}, but the topology gives it ${topology[def.name].contract.typeName}`);
  const common = loadConfig(commonConfig(def.name, source), source);
  checkListenHost(common.MESH_TRANSPORT, common.HOST); // before opening anything
  const config = loadConfig(def.config, source) as ConfigOf<C>;
  const logger = createLogger(def.name, source.LOG_LEVEL);
  initTracing(def.name);
  const metrics = createMetricsRegistry(def.name);
  const tls = await loadTls(common.CERTS_DIR, def.name).catch((err) => {
    throw new ConfigError(`CERTS_DIR ${common.CERTS_DIR} lacks ${def.name}'s certificate (run \`npm run certs\`): ${err.message}`);
  });
  const dataDir = common.DATA_DIR.startsWith("memory://") ? common.DATA_DIR : join(common.DATA_DIR, "pglite");
  // Start-up phases are log lines the launcher shows as progress: migrating, (seeding,) serving.
  logger.info({ database: common.DATABASE_URL ? "postgres" : "pglite" }, "migrating");
  const db = await openDb({ url: await databaseUrl(common.DATABASE_URL, common.DATABASE_PASSWORD_FILE), dataDir });
  const applied = [...(await migrate(db, meshMigrations, "mesh/")), ...(await migrate(db, def.migrations))];
  if (applied.length) logger.info({ applied, database: db.kind }, "migrations applied");
  let eventing: Eventing | undefined;
  const cleanups: (() => Promise<void> | void)[] = [];
  const onStop = (fn: () => Promise<void> | void) => void cleanups.push(fn);
  const upstream = <U extends DescService>(service: U, name: ServiceName): MeshClient<U> => {
    const variable = `${name.toUpperCase()}_ADDRESSES`;
    const { [variable]: addresses } = loadConfig({ [variable]: env.addresses(`127.0.0.1:${topology[name].grpcPort}`) }, source);
    const client = createClient(service, { upstream: name, addresses: addresses as string[], tls, transport: common.MESH_TRANSPORT, metrics, policy: topology[name].resilience });
    onStop(() => client.close());
    return client;
  };
  const every = (name: string, intervalMs: number, job: () => Promise<unknown>) => {
    const periodic = startPeriodic(name, intervalMs, job, logger);
    onStop(() => periodic.stop());
  };
  const natsUrl = common.NATS_URL ?? "tls://127.0.0.1:4222";
  const keepInvalidated: ServiceDeps<C>["keepInvalidated"] = (cache, announced) => {
    const subjects = (topology[def.name] as ServiceSpec).cacheInvalidatedBy;
    if (!subjects?.length) throw new Error(`topology: ${def.name} keeps a cache, but names no events that invalidate it (cacheInvalidatedBy)`);
    const feed = keepCacheInvalidated(cache, { url: natsUrl, identity: def.name, tls, subjects, logger }, announced);
    onStop(() => feed.stop());
  };
  const deps: ServiceDeps<C> = { db, logger, metrics, config, onStop, every, upstream, keepInvalidated };
  const impl = await def.handlers(deps);
  const server = await serve({
    service: def.service,
    impl,
    tls,
    transport: common.MESH_TRANSPORT,
    logger,
    metrics,
    host: common.HOST,
    port: common.PORT,
    ready: db.ping,
    drainTimeoutMs: common.DRAIN_TIMEOUT_MS,
  });
  eventing = startEventing({
    service: def.name,
    url: natsUrl,
    tls,
    db,
    logger,
    metrics,
    subjects: topology[def.name].eventSubjects,
    handlers: def.consumers?.(deps) ?? [],
    streamReplicas: common.EVENTS_REPLICAS,
    streamLimits: {
      events: { maxAgeMs: common.EVENTS_MAX_AGE_HOURS * 3_600_000, maxBytes: common.EVENTS_MAX_MB * 1024 ** 2 },
      deadLetters: { maxAgeMs: common.DEAD_LETTERS_MAX_AGE_HOURS * 3_600_000, maxBytes: common.EVENTS_MAX_MB * 1024 ** 2 },
    },
  });
  const metricsServer: Server = await serveMetrics(metrics, common.METRICS_PORT, common.METRICS_HOST ?? common.HOST);
  const metricsPort = (metricsServer.address() as { port: number }).port;
  logger.info({ port: server.port, metrics_port: metricsPort, database: db.kind }, "serving");
  return {
    port: server.port,
    metricsPort,
    db,
    eventing,
    async stop() {
      await server.drain();
      await eventing?.stop();
      for (const cleanup of cleanups.reverse()) await cleanup();
      await new Promise((resolve) => metricsServer.close(resolve));
      await db.close();
      await shutdownTracing(); // flushes spans still buffered for the OTLP exporter
      logger.info("stopped");
    },
  };
}

/** DATABASE_URL with the password read from DATABASE_PASSWORD_FILE, when one is given. */
async function databaseUrl(url: string | undefined, passwordFile: string | undefined): Promise<string | undefined> {
  if (!url || !passwordFile) return url;
  const password = await readFile(passwordFile, "utf8").catch((err) => {
    throw new ConfigError(`DATABASE_PASSWORD_FILE ${passwordFile} cannot be read: ${err.code ?? err.message}`);
  });
  const withPassword = new URL(url);
  withPassword.password = encodeURIComponent(password.trim());
  return withPassword.href;
}

/**
 * Runs a process's main part: a configuration error prints one line and exits 78 (EX_CONFIG);
 * once started, SIGTERM or SIGINT stop it cleanly and exit 0.
 */
export async function runProcess(name: string, start: () => Promise<{ stop(): Promise<void> }>): Promise<void> {
  let running: { stop(): Promise<void> };
  try {
    running = await start();
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    process.stderr.write(`${name}: configuration error: ${err.message}\n`);
    process.exit(78);
  }
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    await running.stop();
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // Under the launcher, stdin is a pipe from it: its end means the launcher is gone (even killed),
  // and a process nobody supervises any more stops rather than lingering.
  if (process.env.SHOPMESH_SUPERVISED === "1") process.stdin.once("end", stop).resume();
}

/** Entry point of a service process. */
export const main = <S extends DescService, C extends ConfigSpec>(def: ServiceDefinition<S, C>): Promise<void> =>
  runProcess(def.name, () => startService(def));
