// Redis cache-aside for protobuf messages, with a TTL.
//
// Readers fill only empty keys (SET NX); writers, after committing, replace the value (SET). So a
// reader that loaded a row just before an update can never put the old value back over the new
// one: either its SET NX finds the writer's value and does nothing, or the writer's SET comes
// later and overwrites it. The cache is an optimization only: when Redis is slow or down, reads
// go to the database (each command has a short timeout) and the service keeps answering.
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import type { Logger } from "./telemetry.js";

export interface MessageCache<S extends DescMessage> {
  /** Cached values for `ids`; missing ones are loaded with `load`, cached, and returned in order. */
  getMany(ids: readonly string[], load: (missing: string[]) => Promise<Map<string, MessageShape<S>>>): Promise<Map<string, MessageShape<S>>>;
  /** After a committed write: replace the cached value. */
  put(id: string, value: MessageShape<S>): Promise<void>;
  /** Resolves once Redis is first connected (until then every read goes to the database). */
  readonly ready: Promise<void>;
  close(): Promise<void>;
}

export interface CacheOptions {
  url: string;
  prefix: string;
  ttlSeconds: number;
  logger: Logger;
  commandTimeoutMs?: number;
}

export function createMessageCache<S extends DescMessage>(schema: S, opts: CacheOptions): MessageCache<S> {
  const redis = new Redis(opts.url, {
    lazyConnect: false,
    enableOfflineQueue: false, // fail at once while disconnected instead of queueing
    maxRetriesPerRequest: 0,
    commandTimeout: opts.commandTimeoutMs ?? 250,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  });
  let degraded = false;
  redis.on("error", () => {}); // reported below, once per outage
  redis.on("ready", () => {
    if (degraded) opts.logger.info("cache available again");
    degraded = false;
  });
  const degrade = (err: unknown) => {
    if (!degraded) opts.logger.warn({ err: (err as Error).message }, "cache unavailable; reading from the database");
    degraded = true;
  };
  const key = (id: string) => `${opts.prefix}${id}`;
  const ready = new Promise<void>((resolve) => redis.once("ready", () => resolve()));

  return {
    ready,
    async getMany(ids, load) {
      const found = new Map<string, MessageShape<S>>();
      const cached = await redis.mgetBuffer(...ids.map(key)).catch((err) => (degrade(err), ids.map(() => null)));
      ids.forEach((id, i) => {
        const bytes = cached[i];
        if (bytes) found.set(id, fromBinary(schema, bytes));
      });
      const missing = ids.filter((id) => !found.has(id));
      if (missing.length === 0) return found;
      const loaded = await load(missing);
      if (loaded.size > 0 && !degraded) {
        const pipeline = redis.pipeline();
        for (const [id, value] of loaded) pipeline.set(key(id), Buffer.from(toBinary(schema, value)), "EX", opts.ttlSeconds, "NX");
        await pipeline.exec().catch(degrade);
      }
      for (const [id, value] of loaded) found.set(id, value);
      return found;
    },
    async put(id, value) {
      // On failure, try to delete instead; if Redis is down, the TTL bounds staleness.
      await redis.set(key(id), Buffer.from(toBinary(schema, value)), "EX", opts.ttlSeconds).catch(async (err) => {
        degrade(err);
        await redis.del(key(id)).catch(() => {});
      });
    },
    async close() {
      redis.disconnect();
    },
  };
}
