// A cache's side of NATS: a plain core subscription to the events that invalidate it (the
// topology's cacheInvalidatedBy: the gateway's and order's), so every replica sees every one, over
// TLS with its process's own certificate (NATS lets it subscribe to exactly these subjects).
// The cache may be on only while the feed surely delivers: `live` is called once the server has
// confirmed the subscriptions (a flush after SUB: a refused one is reported before the PONG), `lost`
// on any doubt: disconnect (also how nats-server ends a slow consumer; the callback itself never
// queues), a stale connection, a refused subscription, the connection closed.
// Events missed while it was away are unknowable, so the cache starts empty each time it is live.
import { connect, type NatsConnection, type Subscription } from "nats";
import type { TlsFiles } from "../certs.js";
import { natsConnectOptions } from "../events/nats-config.js";
import type { Logger } from "../telemetry.js";
import type { InvalidatedCache } from "./invalidated-cache.js";

export interface InvalidationFeedOptions {
  url: string;
  /** The mesh identity that subscribes ("gateway", "order"): its certificate is in `tls`. */
  identity: string;
  tls: TlsFiles;
  /** The cache it keeps, in words for the logs, e.g. "the edge cache". */
  what: string;
  subjects: readonly string[];
  logger: Logger;
  /** An event arrived on `subject`. */
  event(subject: string, payload: Uint8Array): void;
  live(): void;
  lost(): void;
  /**
   * How often the client pings the server; two unanswered pings count as a lost connection. A
   * connection that died without closing is noticed within about twice this.
   */
  pingIntervalMs?: number;
}

export interface InvalidationFeed {
  stop(): Promise<void>;
}

export function startInvalidationFeed(opts: InvalidationFeedOptions): InvalidationFeed {
  let nc: NatsConnection | undefined;
  let stopping = false;
  /** Bumped by every loss: a confirmation that began before one is void. */
  let epoch = 0;
  const lose = () => {
    epoch++;
    opts.lost();
  };

  const started = (async () => {
    // Until the first connection, tried here (connect's own waitOnFirstConnect cannot be stopped).
    for (let attempt = 0; !nc && !stopping; attempt++) {
      try {
        nc = await connect({
          servers: opts.url, ...natsConnectOptions(opts.identity, opts.tls), timeout: 5_000,
          maxReconnectAttempts: -1, reconnectTimeWait: 500, pingInterval: opts.pingIntervalMs ?? 2_000, maxPingOut: 2,
        });
      } catch (err) {
        if (attempt % 30 === 0) opts.logger.warn({ err, nats: opts.url }, `cannot reach NATS: ${opts.what} stays off until it can`);
        await new Promise((r) => setTimeout(r, 1_000));
      }
    }
    if (!nc) return;
    if (stopping) return void (await nc.close());
    const connection = nc;
    const subs: Subscription[] = opts.subjects.map((subject) =>
      connection.subscribe(subject, {
        callback: (err, msg) => {
          if (err) {
            opts.logger.error({ err, subject }, `NATS refused the invalidation subscription: ${opts.what} stays off`);
            return lose();
          }
          opts.event(msg.subject, msg.data);
        },
      }));
    const confirm = async () => {
      const at = epoch;
      try {
        await connection.flush();
      } catch {
        return; // the connection went away meanwhile: its loss was reported
      }
      if (at === epoch && !stopping && subs.every((s) => !s.isClosed())) {
        opts.logger.info({ subjects: opts.subjects }, `cache invalidations live: ${opts.what} is on`);
        opts.live();
      }
    };
    void confirm();
    for await (const status of connection.status()) {
      if (stopping) break;
      if (status.type === "disconnect" || status.type === "staleConnection" || status.type === "reconnecting") {
        if (status.type === "disconnect") opts.logger.warn({ nats: opts.url }, `NATS disconnected: ${opts.what} is off until it is back`);
        lose();
      } else if (status.type === "reconnect") {
        lose(); // events published meanwhile were missed
        void confirm(); // the client subscribes again on reconnecting
      }
    }
  })();
  started.catch((err) => opts.logger.error({ err }, `cache invalidation feed failed: ${opts.what} stays off`));
  // However the connection ends (closed, refused for good), the cache must not stay on.
  void started.then(() => nc?.closed()).then(() => !stopping && lose(), () => {});

  return {
    async stop() {
      stopping = true;
      lose();
      await nc?.close().catch(() => {});
    },
  };
}

/** What keepInvalidated needs of a cache. */
export type KeptCache = Pick<InvalidatedCache<unknown>, "what" | "invalidate" | "resume" | "suspend">;

/**
 * Keeps `cache` correct by the feed: on while it is live, cleared by each event before
 * `announced` sees it (e.g. ProductFreshness, which must know of the event before any refill).
 */
export function keepInvalidated(
  cache: KeptCache,
  opts: Omit<InvalidationFeedOptions, "what" | "event" | "live" | "lost">,
  announced?: (subject: string, payload: Uint8Array) => void,
): InvalidationFeed {
  return startInvalidationFeed({
    ...opts,
    what: cache.what,
    event(subject, payload) {
      cache.invalidate(); // first: whatever happens below, nothing older is served from here on
      try {
        announced?.(subject, payload);
      } catch (err) {
        opts.logger.warn({ err }, "an invalidating event that does not decode");
      }
    },
    live: () => cache.resume(),
    lost: () => cache.suspend(),
  });
}
