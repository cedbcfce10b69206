// An in-memory cache that events keep correct: the edge's cache of public answers (gateway) and
// order's cache of catalog prices. What keeps it correct:
//  - it is on only while its invalidation feed is live (invalidation-feed.ts): suspend() clears
//    it and every lookup bypasses it until resume();
//  - invalidate() clears it and starts a new generation: a fill presents the generation its read
//    began in (begin()), and is dropped if an invalidation came meanwhile, so a read that raced an
//    update never stores its older answer after the update's invalidation;
//  - each entry lives at most maxAgeMs, a safety net should an invalidation be lost;
//  - it holds at most maxEntries and maxBytes (by sizeOf), the least recently used going first.
import { Counter, Gauge, type Registry } from "prom-client";

export interface InvalidatedCacheOptions<V> {
  /** Its metrics' prefix, e.g. "gateway_cache" (gateway_cache_lookups_total, …). */
  name: string;
  /** What it is, for the metrics' help, e.g. "the edge cache". */
  what: string;
  maxEntries: number;
  maxAgeMs: number;
  metrics: Registry;
  /** A value's size, and the most all may take together (with sizeOf: one value at most a sixteenth). */
  sizeOf?: (value: V) => number;
  maxBytes?: number;
}

interface Entry<V> {
  value: V;
  size: number;
  expiresAt: number;
}

/** What a fill presents to store(): the generation its read began in; undefined while the cache is off. */
export type FillTicket = number | undefined;

export class InvalidatedCache<V> {
  private readonly entries = new Map<string, Entry<V>>();
  private bytes = 0;
  private generation = 0;
  private live = false;
  private readonly maxBytes: number;
  /** What it is, in words for logs and metrics' help, e.g. "the edge cache". */
  readonly what: string;
  private readonly lookups;
  private readonly dropped;
  private readonly invalidations;

  constructor(private readonly opts: InvalidatedCacheOptions<V>) {
    this.maxBytes = opts.sizeOf ? (opts.maxBytes ?? Infinity) : Infinity;
    this.what = opts.what;
    const registers = [opts.metrics];
    const lookups = new Counter({ name: `${opts.name}_lookups_total`, help: `Lookups in ${opts.what}: hit, miss, or bypass (the cache was off).`, labelNames: ["result"], registers });
    // Children bound once: these run on every lookup.
    this.lookups = { hit: lookups.labels("hit"), miss: lookups.labels("miss"), bypass: lookups.labels("bypass") };
    const dropped = new Counter({ name: `${opts.name}_fills_dropped_total`, help: `Answers ${opts.what} did not store: raced an invalidation, older than an event said, or too large.`, labelNames: ["reason"], registers });
    this.dropped = { raced: dropped.labels("raced"), stale: dropped.labels("stale"), large: dropped.labels("too_large") };
    this.invalidations = new Counter({ name: `${opts.name}_invalidations_total`, help: `Events that cleared ${opts.what}.`, registers });
    const self = this;
    new Gauge({ name: `${opts.name}_entries`, help: `Entries held by ${opts.what}.`, registers, collect() { this.set(self.entries.size); } });
    if (opts.sizeOf) new Gauge({ name: `${opts.name}_bytes`, help: `Bytes held by ${opts.what}.`, registers, collect() { this.set(self.bytes); } });
    new Gauge({ name: `${opts.name}_live`, help: `1 while ${opts.what} is on (its invalidation feed is live).`, registers, collect() { this.set(self.live ? 1 : 0); } });
  }

  /** The stored value for `key`, if the cache is on and holds a fresh one. */
  get(key: string): V | undefined {
    if (!this.live) return void this.lookups.bypass.inc();
    const entry = this.entries.get(key);
    if (entry && entry.expiresAt > Date.now()) {
      // Most recently used last: Map keeps insertion order, and eviction takes the first.
      this.entries.delete(key);
      this.entries.set(key, entry);
      this.lookups.hit.inc();
      return entry.value;
    }
    if (entry) this.remove(key, entry);
    this.lookups.miss.inc();
    return undefined;
  }

  /** Taken before the read that may fill the cache. */
  begin(): FillTicket {
    return this.live ? this.generation : undefined;
  }

  /**
   * Stores `value` for `key` unless the cache went off or was invalidated since `ticket` was taken,
   * or `fresh` (the caller's own check of the value) says it is older than what is known.
   */
  store(ticket: FillTicket, key: string, value: V, fresh: () => boolean = () => true): void {
    if (ticket === undefined || !this.live) return;
    if (ticket !== this.generation) return void this.dropped.raced.inc();
    if (!fresh()) return void this.dropped.stale.inc();
    const size = this.opts.sizeOf?.(value) ?? 0;
    if (size > this.maxBytes / 16) return void this.dropped.large.inc(); // one value may not push out a sixteenth of the rest
    const old = this.entries.get(key);
    if (old) this.remove(key, old);
    this.entries.set(key, { value, size, expiresAt: Date.now() + this.opts.maxAgeMs });
    this.bytes += size;
    for (const [k, e] of this.entries) {
      if (this.entries.size <= this.opts.maxEntries && this.bytes <= this.maxBytes) break;
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

  private remove(key: string, entry: Entry<V>): void {
    this.entries.delete(key);
    this.bytes -= entry.size;
  }

  private clear(): void {
    this.entries.clear();
    this.bytes = 0;
  }
}
