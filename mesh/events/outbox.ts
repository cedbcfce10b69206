// The transactional outbox. A service writes its state change and its events in one database
// transaction (enqueue with the transaction), so an event exists if and only if the change
// committed. The events of one transaction go into the outbox table as one multi-row INSERT just
// before its COMMIT, and right after the COMMIT the relay publishes them from memory: no poll
// stands between a commit and its events. Published rows are marked in batches.
//
// The table is what makes this safe: a process that dies after COMMIT, or a publish that fails
// (NATS away), leaves rows unmarked, and the relay's poll publishes them: at start, when NATS
// comes back, after a failure, and otherwise at a slow, backing-off pace. A row published but not
// yet marked when its process died is published again: JetStream drops the copy within its
// duplicate window (Nats-Msg-Id = event id), and consumers' inboxes drop it after that. Rows of
// one transaction go out in order; rows of concurrent transactions in either order (consumers
// never rely on order across transactions). Replicas may each run a relay.
import type { DescMessage, MessageInitShape } from "@bufbuild/protobuf";
import type { JetStreamClient } from "nats";
import { Gauge, type Registry } from "prom-client";
import type { Db, Queryable, Tx } from "../data/db.js";
import { encodeEvent, publishEncoded, type EncodedEvent, type EventMeta } from "./events.js";
import { metric, type Logger } from "../telemetry.js";

/** Who publishes a database's committed events from memory: its service's relay. */
const publishers = new WeakMap<Db, (events: readonly EncodedEvent[]) => void>();
const OUTBOX = Symbol("outbox");

/** Adds an event to the outbox of the caller's transaction; returns the event id. */
export function enqueue<S extends DescMessage>(q: Tx, schema: S, data: MessageInitShape<S>, meta: EventMeta): string {
  const event = encodeEvent(schema, data, meta);
  // The transaction's events, written at its end and published once it committed.
  const { events } = q.atCommit(OUTBOX, () => {
    const events: EncodedEvent[] = [];
    return {
      events,
      before: async (tq: Queryable) => void (await insertRows(tq, events)),
      after: () => publishers.get(q.db)?.(events),
    };
  });
  events.push(event);
  return event.id;
}

/** One statement for all of a transaction's events, in the order they were enqueued (seq). */
const insertRows = (q: Queryable, events: readonly EncodedEvent[]) =>
  q.query(
    `INSERT INTO outbox (id, subject, payload, headers)
     SELECT id, subject, decode(payload, 'base64'), headers::jsonb
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS e(id, subject, payload, headers, n) ORDER BY n`,
    [
      events.map((e) => e.id),
      events.map((e) => e.subject),
      events.map((e) => Buffer.from(e.payload).toString("base64")),
      events.map((e) => JSON.stringify(e.headers)),
    ],
  );

export interface Relay {
  /** Looks for unpublished rows now (NATS came back; another process may have left some). */
  notify(): void;
  /** Publishes what the table holds unpublished, once; resolves to how many were published. */
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
  /** The poll's shortest pause; it doubles while polls find nothing, up to maxIntervalMs. */
  intervalMs?: number;
  maxIntervalMs?: number;
  batchSize?: number;
  /** Published rows older than this are deleted. */
  retainMs?: number;
  publishTimeoutMs?: number;
  /** How long published ids wait to be marked together. */
  markDelayMs?: number;
}

export function startRelay({
  db, js, logger, intervalMs = 1_000, maxIntervalMs = 10_000, batchSize = 100, retainMs = 86_400_000, publishTimeoutMs = 2_000, markDelayMs = 100,
}: RelayOptions): Relay {
  let stopped = false;
  let wake: (() => void) | undefined;
  let notified = false; // a notify that came while a poll was running must not wait for the timer
  let failures = 0;
  let lastCleanup = 0;
  /** Ids being published now, from memory or by the poll: the poll leaves them alone. */
  const inFlight = new Set<string>();
  /** Ids published and not yet marked. */
  let toMark = new Set<string>();
  let marking: Promise<void> | undefined;
  let markTimer: NodeJS.Timeout | undefined;

  const markNow = async () => {
    markTimer = undefined;
    if (!toMark.size) return;
    const ids = [...toMark];
    toMark = new Set();
    try {
      await db.query("UPDATE outbox SET published_at = now() WHERE id = ANY($1)", [ids]);
    } catch {
      for (const id of ids) toMark.add(id); // next time; meanwhile a poll may publish them again, harmlessly
    } finally {
      for (const id of ids) inFlight.delete(id);
    }
  };
  const scheduleMark = () => {
    markTimer ??= setTimeout(() => (marking = markNow()), markDelayMs);
  };

  /**
   * Publishes events pipelined on one connection (JetStream stores them in order). Marks only the
   * unbroken prefix of successes, so a failure never lets a later event overtake an earlier one
   * for good; the rest waits for the poll.
   */
  const publish = async (events: readonly EncodedEvent[]): Promise<number> => {
    for (const e of events) inFlight.add(e.id);
    const results = await Promise.allSettled(events.map((e) => publishEncoded(js, e, publishTimeoutMs)));
    const failed = results.findIndex((r) => r.status === "rejected");
    const published = failed === -1 ? events : events.slice(0, failed);
    for (const e of published) toMark.add(e.id);
    for (const e of events.slice(published.length)) inFlight.delete(e.id);
    scheduleMark();
    if (failed !== -1) throw (results[failed] as PromiseRejectedResult).reason;
    return published.length;
  };

  const publishing = new Set<Promise<void>>();
  const publishCommitted = (events: readonly EncodedEvent[]) => {
    if (stopped) return; // the poll of the next start publishes them
    const done: Promise<void> = publish(events).then(() => {}, (err) => {
      if (failures++ === 0) logger.warn({ err }, "cannot publish events now; they stay in the outbox and will be retried");
      wakeSoon();
    }).finally(() => publishing.delete(done));
    publishing.add(done);
  };

  const poll = async () => {
    const rows = await db.query<OutboxRow>("SELECT id, subject, payload, headers FROM outbox WHERE published_at IS NULL ORDER BY seq LIMIT $1", [batchSize]);
    const waiting = rows.filter((row) => !inFlight.has(row.id) && !toMark.has(row.id));
    if (!waiting.length) return 0;
    return publish(waiting.map((row) => ({ id: row.id, subject: row.subject, type: row.headers["ce-type"] ?? "", payload: row.payload, headers: row.headers })));
  };

  let pause = 0;
  const wakeSoon = () => {
    notified = true;
    wake?.();
  };
  publishers.set(db, publishCommitted);

  const loop = (async () => {
    while (!stopped) {
      let published = 0;
      notified = false;
      try {
        published = await poll();
        if (failures) logger.info({ after_failures: failures }, "outbox relay publishing again");
        failures = 0;
        if (Date.now() - lastCleanup > 60_000) {
          lastCleanup = Date.now();
          await db.query("DELETE FROM outbox WHERE published_at < now() - $1 * interval '1 millisecond'", [retainMs]);
        }
      } catch (err) {
        if (failures++ === 0) logger.warn({ err }, "outbox relay cannot publish; events stay in the outbox and will be retried");
      }
      if (published === batchSize) continue; // more waiting: keep going
      // While NATS is away: back off, but never long (events are waiting; a reconnect also wakes
      // it). Otherwise the poll is only the safety net: slower the longer it finds nothing.
      if (failures) pause = Math.min(intervalMs * 2 ** failures, 2_000);
      else if (published || notified) pause = intervalMs;
      else pause = Math.min(Math.max(pause * 2, intervalMs), maxIntervalMs);
      if (notified && !failures) continue;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, pause);
        wake = () => (clearTimeout(timer), resolve());
      });
      wake = undefined;
    }
  })();

  return {
    notify: wakeSoon,
    flush: poll,
    async stop() {
      stopped = true;
      if (publishers.get(db) === publishCommitted) publishers.delete(db);
      wake?.();
      await loop;
      await Promise.all(publishing);
      clearTimeout(markTimer);
      await marking;
      await markNow();
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
