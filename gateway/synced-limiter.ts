// A fixed-window limiter that decides in memory and shares its counts through Redis in the
// background, instead of a Redis round trip per request. It is rate-limiter-flexible's memory
// limiter, plus: every sync it adds what this replica consumed per key to the shared count
// (RateLimiterRedis.penalty: one atomic INCRBY that also starts the window's expiry; ioredis
// pipelines the keys of one sync), and takes the shared total, with the window's remaining time,
// as its own count. Replicas thus learn each other's consumption within one sync interval: a key
// exceeds its limit by at most what the other replicas admit for it during one interval. While
// Redis cannot answer, the local count alone limits (each replica its own limit).
import { RateLimiterMemory, type IRateLimiterOptions, type RateLimiterRedis, type RateLimiterRes } from "rate-limiter-flexible";

export class SyncedLimiter extends RateLimiterMemory {
  /** Points consumed per key here since the last sync. */
  private pending = new Map<string, number>();

  constructor(opts: IRateLimiterOptions, private readonly shared: RateLimiterRedis) {
    super(opts);
  }

  override consume(key: string | number, points = 1, options?: { [key: string]: unknown }): Promise<RateLimiterRes> {
    this.pending.set(String(key), (this.pending.get(String(key)) ?? 0) + points);
    return super.consume(key, points, options);
  }

  /** Reports this replica's consumption since the last sync and learns the shared counts. */
  async sync(): Promise<void> {
    const reported = this.pending;
    this.pending = new Map();
    await Promise.all([...reported].map(async ([key, points]) => {
      let shared: RateLimiterRes;
      try {
        shared = await this.shared.penalty(key, points);
      } catch {
        return; // Redis is away: the local count stands, and these points are not shared
      }
      const since = this.pending.get(key) ?? 0; // consumed here while the answer travelled
      await this.set(key, shared.consumedPoints + since, Math.max(shared.msBeforeNext, 1) / 1000);
    }));
  }
}
