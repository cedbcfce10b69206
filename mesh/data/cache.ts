// Redis cache-aside for protobuf messages, with a TTL and versions.
//
// Each cached value carries the version of the row it came from (a counter the database bumps on
// every write, so versions follow commit order). Readers fill only empty keys (SET NX); writers,
// after committing, replace the value only if theirs is newer (a compare-and-set in Lua). So
// neither a reader that loaded a row just before an update nor a slower concurrent writer can
// put an older value over a newer one. The cache is an optimization only: when Redis is slow or
// down, reads go to the database (each command has a short timeout) and the service keeps going.
import { fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Redis } from "ioredis";
import type { Logger } from "../telemetry.js";

export interface Versioned<T> {
  value: T;
  version: bigint;
}

export interface MessageCache<S extends DescMessage> {
  /** Cached values for `ids`; missing ones are loaded with `load`, cached, and returned. */
  getMany(ids: readonly string[], load: (missing: string[]) => Promise<Map<string, Versioned<MessageShape<S>>>>): Promise<Map<string, MessageShape<S>>>;
  /** After a committed write: replace the cached value unless a newer version is there. */
  put(id: string, entry: Versioned<MessageShape<S>>): Promise<void>;
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

// Values are "<20-digit version><protobuf bytes>"; fixed width makes versions compare as strings.
const VERSION_WIDTH = 20;
const encode = (version: bigint, bytes: Uint8Array) => Buffer.concat([Buffer.from(version.toString().padStart(VERSION_WIDTH, "0")), bytes]);

const PUT_IF_NEWER = `
local current = redis.call('GET', KEYS[1])
if current and string.sub(current, 1, ${VERSION_WIDTH}) >= string.sub(ARGV[1], 1, ${VERSION_WIDTH}) then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1`;

export function createMessageCache<S extends DescMessage>(schema: S, opts: CacheOptions): MessageCache<S> {
  const redis = new Redis(opts.url, {
    enableOfflineQueue: false, // fail at once while disconnected instead of queueing
    maxRetriesPerRequest: 0,
    commandTimeout: opts.commandTimeoutMs ?? 250,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2_000),
  });
  redis.defineCommand("putIfNewer", { numberOfKeys: 1, lua: PUT_IF_NEWER });
  let degraded = false;
  redis.on("error", () => {}); // reported below, once per outage
  const degrade = (err: unknown) => {
    if (!degraded) opts.logger.warn({ err: (err as Error).message }, "cache unavailable; reading from the database");
    degraded = true;
  };
  const recovered = () => {
    if (degraded) opts.logger.info("cache available again");
    degraded = false;
  };
  const key = (id: string) => `${opts.prefix}${id}`;
  const ready = new Promise<void>((resolve) => redis.once("ready", () => resolve()));

  return {
    ready,
    async getMany(ids, load) {
      const found = new Map<string, MessageShape<S>>();
      let cached: (Buffer | null)[];
      try {
        cached = await redis.mgetBuffer(...ids.map(key));
        recovered(); // a command went through: fill the cache again
      } catch (err) {
        degrade(err);
        cached = ids.map(() => null);
      }
      ids.forEach((id, i) => {
        const bytes = cached[i];
        if (bytes) found.set(id, fromBinary(schema, bytes.subarray(VERSION_WIDTH)));
      });
      const missing = ids.filter((id) => !found.has(id));
      if (missing.length === 0) return found;
      const loaded = await load(missing);
      if (loaded.size > 0 && !degraded) {
        const pipeline = redis.pipeline();
        for (const [id, { value, version }] of loaded) pipeline.set(key(id), encode(version, toBinary(schema, value)), "EX", opts.ttlSeconds, "NX");
        await pipeline.exec().catch(degrade);
      }
      for (const [id, { value }] of loaded) found.set(id, value);
      return found;
    },
    async put(id, { value, version }) {
      try {
        await (redis as unknown as { putIfNewer(k: string, v: Buffer, ttl: number): Promise<number> }).putIfNewer(key(id), encode(version, toBinary(schema, value)), opts.ttlSeconds);
      } catch (err) {
        // Could not replace it: try to drop it; if Redis is down altogether, the TTL bounds staleness.
        degrade(err);
        await redis.del(key(id)).catch(() => {});
      }
    },
    async close() {
      redis.disconnect();
    },
  };
}
