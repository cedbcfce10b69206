// Rate limiting shared by every gateway replica through Redis: a steady rate per key (the user
// when authenticated, else the client address) plus a burst allowance. Each request is decided in
// memory; the counts are shared through Redis in the background every syncMs (synced-limiter.ts),
// so a key may get up to one sync interval's worth of requests per other replica beyond its limit.
// If Redis cannot answer, each replica keeps limiting on its own with its local counts: the
// documented choice is to fail open to a local limit, not to refuse all traffic and not to drop
// limiting altogether.
import type { Redis } from "ioredis";
import { BurstyRateLimiter, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";
import { SyncedLimiter } from "./synced-limiter.js";

export interface RateLimitOptions {
  redis: Redis;
  /** Requests per window, steady state. */
  points: number;
  windowSeconds: number;
  /** Extra requests allowed on top, refilled over burstWindowSeconds. */
  burst: number;
  burstWindowSeconds?: number;
  prefix?: string;
  /** How often each replica shares its counts through Redis (default 200 ms). */
  syncMs?: number;
}

export interface Decision {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the window resets (and, when refused, until a retry can succeed). */
  resetSeconds: number;
}

export interface RateLimiter {
  take(key: string): Promise<Decision>;
  /** Shares the last counts and stops syncing. */
  stop(): Promise<void>;
}

export function createRateLimiter(opts: RateLimitOptions): RateLimiter {
  const prefix = opts.prefix ?? "gateway:rl";
  const limiter = (keyPrefix: string, points: number, duration: number) =>
    new SyncedLimiter({ keyPrefix: `${keyPrefix}:local`, points, duration }, new RateLimiterRedis({ storeClient: opts.redis, keyPrefix, points, duration, rejectIfRedisNotReady: true }));
  const steady = limiter(`${prefix}:steady`, opts.points, opts.windowSeconds);
  const burst = limiter(`${prefix}:burst`, opts.burst, opts.burstWindowSeconds ?? opts.windowSeconds * 10);
  const bucket = new BurstyRateLimiter(steady, burst);
  // One sync at a time: while Redis is slow, ticks are skipped rather than piled up.
  let syncing: Promise<unknown> | undefined;
  const sync = () => (syncing ??= Promise.all([steady.sync(), burst.sync()]).finally(() => (syncing = undefined)));
  const timer = setInterval(sync, opts.syncMs ?? 200).unref();
  // The headers describe the steady policy; the burst is headroom on top of it.
  const limit = opts.points;
  const decision = (allowed: boolean, res: RateLimiterRes): Decision => ({
    allowed,
    limit,
    remaining: Math.max(0, res.remainingPoints),
    resetSeconds: Math.max(1, Math.ceil(res.msBeforeNext / 1000)),
  });
  return {
    async take(key) {
      try {
        return decision(true, await bucket.consume(key));
      } catch (rejection) {
        if (rejection instanceof RateLimiterRes) return decision(false, rejection);
        throw rejection;
      }
    },
    async stop() {
      clearInterval(timer);
      await syncing;
      await sync();
    },
  };
}
