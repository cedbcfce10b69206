// Rate limiting shared by every gateway replica through Redis: a steady rate per key (the user
// when authenticated, else the client address) plus a burst allowance. If Redis cannot answer,
// each replica keeps limiting on its own with an in-memory limiter of the same size: the
// documented choice is to fail open to a local limit, not to refuse all traffic and not to drop
// limiting altogether.
import type { Redis } from "ioredis";
import { BurstyRateLimiter, RateLimiterMemory, RateLimiterRedis, RateLimiterRes } from "rate-limiter-flexible";

export interface RateLimitOptions {
  redis: Redis;
  /** Requests per window, steady state. */
  points: number;
  windowSeconds: number;
  /** Extra requests allowed on top, refilled over burstWindowSeconds. */
  burst: number;
  burstWindowSeconds?: number;
  prefix?: string;
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
}

export function createRateLimiter(opts: RateLimitOptions): RateLimiter {
  const prefix = opts.prefix ?? "gateway:rl";
  const limiter = (keyPrefix: string, points: number, duration: number) =>
    new RateLimiterRedis({
      storeClient: opts.redis,
      keyPrefix,
      points,
      duration,
      rejectIfRedisNotReady: true,
      insuranceLimiter: new RateLimiterMemory({ keyPrefix: `${keyPrefix}:local`, points, duration }),
    });
  const bucket = new BurstyRateLimiter(
    limiter(`${prefix}:steady`, opts.points, opts.windowSeconds),
    limiter(`${prefix}:burst`, opts.burst, opts.burstWindowSeconds ?? opts.windowSeconds * 10),
  );
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
  };
}
