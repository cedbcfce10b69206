// The gateway process: configuration, the clients to every public service, token verification,
// the shared rate limiter, the cache of public reads with its invalidation feed, and the edge server.
import { join } from "node:path";
import { Redis } from "ioredis";
import { pino } from "pino";
import { loadTls } from "../mesh/certs.js";
import { ConfigError, env, loadConfig } from "../mesh/config.js";
import { healthClient } from "../mesh/rpc/health-client.js";
import { transportModes } from "../mesh/rpc/transport.js";
import { projectRoot } from "../mesh/service.js";
import { createLogger, createMetricsRegistry, initTracing, serveMetrics, shutdownTracing } from "../mesh/telemetry.js";
import type { Server } from "node:http";
import { gateway as gatewayTopology, topology, type ServiceName } from "../mesh/topology.js";
import { IdentityService } from "../gen/shop/identity/v1/identity_pb.js";
import type { MeshClient } from "../mesh/rpc/client.js";
import { createAuthenticator } from "./auth.js";
import { openapiDocument } from "./openapi.js";
import { keepInvalidated } from "../mesh/invalidation/invalidation-feed.js";
import { ProductFreshness } from "../mesh/invalidation/product-freshness.js";
import { publicReads } from "./public-reads.js";
import { createRateLimiter } from "./rate-limit.js";
import { InvalidatedCache } from "../mesh/invalidation/invalidated-cache.js";
import { createEdgeServer } from "./server.js";
import { connectUpstreams, publicServices } from "./upstreams.js";

const spec = {
  HOST: env.string("127.0.0.1"),
  PORT: env.port(gatewayTopology.httpPort),
  /** Prometheus /metrics, on its own port as the services have it: never on the public one. */
  METRICS_PORT: env.port(gatewayTopology.metricsPort),
  METRICS_HOST: env.optional(),
  CERTS_DIR: env.string(join(projectRoot, "certs")),
  /** "sidecar": calls to services go in plaintext to the local Envoy, which speaks mTLS as the gateway. */
  MESH_TRANSPORT: env.oneOf(transportModes, "mtls"),
  REDIS_URL: env.string("redis://127.0.0.1:6379"),
  JWT_ISSUER: env.string("shopmesh-identity"),
  JWT_AUDIENCE: env.string("shopmesh"),
  /** Requests per window per user (or per client address when anonymous), plus a burst allowance. */
  RATE_LIMIT_POINTS: env.int(600, 1),
  RATE_LIMIT_WINDOW_SECONDS: env.int(60, 1),
  RATE_LIMIT_BURST: env.int(100, 0),
  /** Redis key prefix: gateways sharing a prefix share their counts. */
  RATE_LIMIT_PREFIX: env.string("gateway:rl"),
  /** How often each replica shares its rate-limit counts through Redis (a key may overshoot by what other replicas admit in one interval). */
  RATE_LIMIT_SYNC_MS: env.int(200, 10),
  /** Comma-separated browser origins allowed to call the API (CORS). */
  CORS_ORIGINS: env.optional(),
  MAX_BODY_BYTES: env.int(1_048_576, 1_024),
  /** A request body that has not ended and brings no byte for this long is refused (408). */
  BODY_IDLE_TIMEOUT_MS: env.int(10_000, 100),
  /** Proxies in front of the gateway that append X-Forwarded-For (0: clients connect directly). */
  TRUSTED_PROXY_HOPS: env.int(0, 0),
  UPSTREAM_TIMEOUT_MS: env.int(5_000, 100),
  /** NATS, for the events that invalidate the cache of public reads; without it nothing is cached. */
  NATS_URL: env.url(["nats:", "tls:"]),
  /** The cache of public reads (see public-reads.ts): its bounds, and the longest an answer is kept. 0 entries: no cache. */
  CACHE_MAX_ENTRIES: env.int(10_000, 0),
  CACHE_MAX_BYTES: env.int(16 * 1_048_576, 0),
  CACHE_MAX_AGE_MS: env.int(10_000, 1),
  LOG_LEVEL: env.string("info"),
};

export interface RunningGateway {
  port: number;
  metricsPort: number;
  stop(): Promise<void>;
}

export async function startGateway(source: NodeJS.ProcessEnv = process.env): Promise<RunningGateway> {
  const c = loadConfig(spec, source);
  const addresses = (name: ServiceName) => {
    const variable = `${name.toUpperCase()}_ADDRESSES`;
    return loadConfig({ [variable]: env.addresses(`127.0.0.1:${topology[name].grpcPort}`) }, source)[variable] as string[];
  };
  // The access log is a line per request: written in blocks of 4 KiB, and at least every 200 ms,
  // rather than one write per line (that write was ~5 % of the gateway's CPU per request). pino
  // writes what is left when the process exits; only a SIGKILL loses the last 200 ms of lines.
  const logDestination = pino.destination({ dest: 1, sync: false, minLength: 4_096 });
  const logFlusher = setInterval(() => logDestination.flush(), 200).unref();
  const logger = createLogger("gateway", c.LOG_LEVEL, logDestination);
  initTracing("gateway");
  const metrics = createMetricsRegistry("gateway");
  const tls = await loadTls(c.CERTS_DIR, "gateway").catch((err) => {
    throw new ConfigError(`CERTS_DIR ${c.CERTS_DIR} lacks the gateway's certificate (run \`npm run certs\`): ${err.message}`);
  });
  const upstreams = connectUpstreams({ tls, transport: c.MESH_TRANSPORT, addresses, policy: { timeoutMs: c.UPSTREAM_TIMEOUT_MS }, metrics });
  // Auto-pipelining: the rate limiter's background sync sends one command per active key at once.
  const redis = new Redis(c.REDIS_URL, { enableOfflineQueue: false, maxRetriesPerRequest: 0, commandTimeout: 200, enableAutoPipelining: true, retryStrategy: (n) => Math.min(n * 200, 2_000) });
  redis.on("error", () => {}); // the limiter falls back to its local limit; see rate-limit.ts
  // Start counting in Redis when it is there (never wait long for it): counts made locally while
  // connecting would not be shared with the other replicas.
  await Promise.race([new Promise((resolve) => redis.once("ready", resolve)), new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
  const health = publicServices.map(([, name]) => healthClient(addresses(name)[0]!, name, tls, c.MESH_TRANSPORT));
  const rateLimiter = createRateLimiter({ redis, points: c.RATE_LIMIT_POINTS, windowSeconds: c.RATE_LIMIT_WINDOW_SECONDS, burst: c.RATE_LIMIT_BURST, prefix: c.RATE_LIMIT_PREFIX, syncMs: c.RATE_LIMIT_SYNC_MS });
  const cache = new InvalidatedCache<Buffer>({
    name: "gateway_cache", what: "the edge cache", maxEntries: c.CACHE_MAX_ENTRIES, maxAgeMs: c.CACHE_MAX_AGE_MS, metrics, sizeOf: (body) => body.length, maxBytes: c.CACHE_MAX_BYTES,
  });
  const freshness = new ProductFreshness();
  const feed = c.NATS_URL && c.CACHE_MAX_ENTRIES > 0
    ? keepInvalidated(cache, { url: c.NATS_URL, identity: "gateway", tls, subjects: gatewayTopology.cacheInvalidatedBy, logger }, (subject, payload) => freshness.announced(subject, payload))
    : undefined;

  const server = createEdgeServer({
    upstreams,
    auth: createAuthenticator({ identity: upstreams.get(IdentityService) as unknown as MeshClient<typeof IdentityService>, issuer: c.JWT_ISSUER, audience: c.JWT_AUDIENCE, logger }),
    rateLimiter,
    logger,
    metrics,
    corsOrigins: (c.CORS_ORIGINS ?? "").split(",").map((o) => o.trim()).filter(Boolean),
    maxBodyBytes: c.MAX_BODY_BYTES,
    bodyIdleTimeoutMs: c.BODY_IDLE_TIMEOUT_MS,
    trustedProxyHops: c.TRUSTED_PROXY_HOPS,
    publicReads: publicReads(cache, freshness),
    ready: async () => (await Promise.all(health.map((h) => h.check("", 1_000).catch(() => "DOWN")))).every((s) => s === "SERVING"),
    openapi: openapiDocument(publicServices.map(([s]) => s)),
  });
  let metricsServer: Server | undefined;
  const release = async () => {
    if (metricsServer) await new Promise((resolve) => metricsServer!.close(resolve));
    for (const client of upstreams.values()) client.close();
    health.forEach((h) => h.close());
    await feed?.stop();
    await rateLimiter.stop();
    redis.disconnect();
    await shutdownTracing();
    clearInterval(logFlusher);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject).listen(c.PORT, c.HOST, () => {
        server.off("error", reject);
        resolve();
      });
    });
    metricsServer = await serveMetrics(metrics, c.METRICS_PORT, c.METRICS_HOST ?? c.HOST);
  } catch (err) {
    if (server.listening) server.close();
    await release(); // e.g. a port is taken: close what was opened before failing
    throw err;
  }
  const port = (server.address() as { port: number }).port;
  const metricsPort = (metricsServer!.address() as { port: number }).port;
  logger.info({ port, metrics_port: metricsPort }, "serving");
  logDestination.flush(); // the launcher waits for this line: not for the next block
  return {
    port,
    metricsPort,
    async stop() {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeIdleConnections();
      await Promise.race([closed, new Promise((r) => setTimeout(r, 5_000).unref())]); // open streams get 5 s
      server.closeAllConnections();
      await release();
      logger.info("stopped");
      logDestination.flushSync();
    },
  };
}
