// The transactional outbox. A service writes its state change and its events in one database
// transaction (enqueue with the transaction's Queryable), so an event exists if and only if the
// change committed. The relay publishes unpublished rows in outbox order and marks them (rows of
// concurrent transactions may commit, and so go out, in either order: consumers never rely on
// order across transactions);
// if NATS is down it keeps them and retries, and a crash between publishing and marking only
// causes a republish that JetStream drops as a duplicate (Nats-Msg-Id = event id). Replicas may
// each run a relay: a row two relays both publish is dropped the same way.
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import type { JetStreamClient } from "nats";
import { Gauge, type Registry } from "prom-client";
import type { Db, Queryable } from "../data/db.js";
import { encodeEvent, publishEncoded, type EventMeta } from "./events.js";
import { metric, type Logger } from "../telemetry.js";

/** Adds an event to the outbox inside the caller's transaction; returns the event id. */
export async function enqueue<S extends DescMessage>(q: Queryable, schema: S, data: MessageInitShape<S>, meta: EventMeta): Promise<string> {
  const event = encodeEvent(schema, data, meta);
  await q.query("INSERT INTO outbox (id, subject, payload, headers) VALUES ($1, $2, $3, $4)", [
    event.id,
    event.subject,
    Buffer.from(event.payload),
    JSON.stringify(event.headers),
  ]);
  return event.id;
}

export interface Relay {
  /** Wakes the relay now (call after committing a transaction that enqueued events). */
  notify(): void;
  /** Publishes what is pending, once; resolves to how many were published. */
  flush(): Promise<number>;
  stop(): Promise<void>;
}

interface OutboxRow extends Record<string, unknown> {
  id: string;
  subject: string;
  payload: Uint8Array;
  headers: Record<string, string>;
}

export interface RelayOptions {
  db: Db;
  js: JetStreamClient;
  logger: Logger;
  /** How often to look for rows when nothing woke the relay. */
  intervalMs?: number;
  batchSize?: number;
  /** Published rows older than this are deleted. */
  retainMs?: number;
  publishTimeoutMs?: number;
}

export function startRelay({ db, js, logger, intervalMs = 250, batchSize = 100, retainMs = 86_400_000, publishTimeoutMs = 2_000 }: RelayOptions): Relay {
  let stopped = false;
  let wake: (() => void) | undefined;
  let notified = false; // a notify that came while a flush was running must not wait for the timer
  let failures = 0;
  let lastCleanup = 0;

  // Rows are read, published (pipelined on one connection, so JetStream stores them in order),
  // then marked. No transaction is held while NATS answers: with embedded PGlite a transaction
  // would stop every other query of the service. Only the unbroken prefix of successes is marked,
  // so a failure never lets a later event overtake an earlier one for good.
  const flush = async () => {
    const rows = await db.query<OutboxRow>("SELECT id, subject, payload, headers FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1", [batchSize]);
    if (rows.length === 0) return 0;
    const results = await Promise.allSettled(
      rows.map((row) => publishEncoded(js, { id: row.id, subject: row.subject, type: row.headers["ce-type"] ?? "", payload: row.payload, headers: row.headers }, publishTimeoutMs)),
    );
    const failed = results.findIndex((r) => r.status === "rejected");
    const published = (failed === -1 ? rows : rows.slice(0, failed)).map((row) => row.id);
    if (published.length) await db.query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)", [published]);
    if (failed !== -1) throw (results[failed] as PromiseRejectedResult).reason;
    return published.length;
  };

  const loop = (async () => {
    while (!stopped) {
      let published = 0;
      notified = false;
      try {
        published = await flush();
        if (failures) logger.info({ after_failures: failures }, "outbox relay publishing again");
        failures = 0;
        if (Date.now() - lastCleanup > 60_000) {
          lastCleanup = Date.now();
          await db.query("DELETE FROM outbox WHERE published_at < now() - $1 * interval '1 millisecond'", [retainMs]);
        }
      } catch (err) {
        if (failures++ === 0) logger.warn({ err }, "outbox relay cannot publish; events stay in the outbox and will be retried");
      }
      if (published === batchSize || (notified && !failures)) continue; // more waiting: keep going
      // Backs off while NATS is away, but never long: events are waiting (a reconnect also wakes it).
      const pause = failures ? Math.min(intervalMs * 2 ** failures, 2_000) : intervalMs;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, pause);
        wake = () => (clearTimeout(timer), resolve());
      });
      wake = undefined;
    }
  })();

  return {
    notify: () => {
      notified = true;
      wake?.();
    },
    flush,
    async stop() {
      stopped = true;
      wake?.();
      await loop;
    },
  };
}

/**
 * outbox_pending_events: events committed but not yet published (the backlog while NATS is away
 * or slow). Counted when /metrics is scraped, not by the relay: it costs nothing while nobody
 * looks, and the partial index outbox_unpublished keeps the count cheap when someone does.
 */
export function outboxBacklogGauge(db: Db, registry: Registry): void {
  metric(registry, "outbox_pending_events", () => new Gauge({
    name: "outbox_pending_events",
    help: "Events in the transactional outbox not yet published to NATS.",
    registers: [registry],
    async collect() {
      // A database that cannot answer now (closing, busy) keeps the last value rather than failing the scrape.
      const rows = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM outbox WHERE published_at IS NULL").catch(() => undefined);
      if (rows?.[0]) this.set(rows[0].n);
    },
  }));
}
