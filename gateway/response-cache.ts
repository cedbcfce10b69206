// The edge's in-memory cache of whole answers (their exact bytes), for reads every anonymous
// caller gets the same answer to and that an event says when to forget. What keeps it correct:
//  - it is on only while its invalidation feed is live (invalidation-feed.ts): suspend() clears
//    it and every lookup bypasses it until resume();
//  - invalidate() clears it and starts a new generation: a fill presents the generation its read
//    began in (begin()), and is dropped if an invalidation came meanwhile, so a read that raced an
//    update never stores its older answer after the update's invalidation;
//  - each entry lives at most maxAgeMs, a safety net should an invalidation be lost;
//  - it holds at most maxEntries and maxBytes, the least recently used going first.
import { Counter, Gauge, type Registry } from "prom-client";

export interface ResponseCacheOptions {
  maxEntries: number;
  maxBytes: number;
  maxAgeMs: number;
  metrics: Registry;
}

interface Entry {
  body: Buffer;
  expiresAt: number;
}

/** What a fill presents to store(): the generation its read began in; undefined while the cache is off. */
export type FillTicket = number | undefined;

export class ResponseCache {
  private readonly entries = new Map<string, Entry>();
  private bytes = 0;
  private generation = 0;
  private live = false;
  private readonly lookups;
  private readonly dropped;
  private readonly invalidations;

  constructor(private readonly opts: ResponseCacheOptions) {
    const registers = [opts.metrics];
    const lookups = new Counter({ name: "gateway_cache_lookups_total", help: "Cacheable reads at the edge: hit, miss, or bypass (the cache was off).", labelNames: ["result"], registers });
    // Children bound once: these run on every cacheable request.
    this.lookups = { hit: lookups.labels("hit"), miss: lookups.labels("miss"), bypass: lookups.labels("bypass") };
    const dropped = new Counter({ name: "gateway_cache_fills_dropped_total", help: "Answers not stored: raced an invalidation, older than an event said, or too large.", labelNames: ["reason"], registers });
    this.dropped = { raced: dropped.labels("raced"), stale: dropped.labels("stale"), large: dropped.labels("too_large") };
    this.invalidations = new Counter({ name: "gateway_cache_invalidations_total", help: "Events that cleared the edge cache.", registers });
    const self = this;
    new Gauge({ name: "gateway_cache_entries", help: "Answers held by the edge cache.", registers, collect() { this.set(self.entries.size); } });
    new Gauge({ name: "gateway_cache_bytes", help: "Bytes of answers held by the edge cache.", registers, collect() { this.set(self.bytes); } });
    new Gauge({ name: "gateway_cache_live", help: "1 while the edge cache is on (its invalidation feed is live).", registers, collect() { this.set(self.live ? 1 : 0); } });
  }

  /** The stored answer for `key`, if the cache is on and holds a fresh one. */
  get(key: string): Buffer | undefined {
    if (!this.live) return void this.lookups.bypass.inc();
    const entry = this.entries.get(key);
    if (entry && entry.expiresAt > Date.now()) {
      // Most recently used last: Map keeps insertion order, and eviction takes the first.
      this.entries.delete(key);
      this.entries.set(key, entry);
      this.lookups.hit.inc();
      return entry.body;
    }
    if (entry) this.remove(key, entry);
    this.lookups.miss.inc();
    return undefined;
  }

  /** Taken before the read that may fill `key`. */
  begin(): FillTicket {
    return this.live ? this.generation : undefined;
  }

  /**
   * Stores `body` for `key` unless the cache went off or was invalidated since `ticket` was taken,
   * or `fresh` (the caller's own check of the answer) says it is older than what is known.
   */
  store(ticket: FillTicket, key: string, body: Buffer, fresh: () => boolean = () => true): void {
    if (ticket === undefined || !this.live) return;
    if (ticket !== this.generation) return void this.dropped.raced.inc();
    if (!fresh()) return void this.dropped.stale.inc();
    if (body.length > this.opts.maxBytes / 16) return void this.dropped.large.inc(); // one answer may not push out a sixteenth of the rest
    const old = this.entries.get(key);
    if (old) this.remove(key, old);
    this.entries.set(key, { body, expiresAt: Date.now() + this.opts.maxAgeMs });
    this.bytes += body.length;
    for (const [k, e] of this.entries) {
      if (this.entries.size <= this.opts.maxEntries && this.bytes <= this.opts.maxBytes) break;
      this.remove(k, e);
    }
  }

  /** Forgets everything: something it holds may have changed. */
  invalidate(): void {
    this.generation++;
    this.clear();
    this.invalidations.inc();
  }

  /** Off, and empty, until resume(): invalidations may be missed meanwhile. */
  suspend(): void {
    this.live = false;
    this.generation++;
    this.clear();
  }

  resume(): void {
    this.clear(); // whatever came in while it was off is not trusted either
    this.live = true;
  }

  private remove(key: string, entry: Entry): void {
    this.entries.delete(key);
    this.bytes -= entry.body.length;
  }

  private clear(): void {
    this.entries.clear();
    this.bytes = 0;
  }
}
