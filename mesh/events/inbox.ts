// The inbox: exactly-once effect for at-least-once delivery. A consumer's effects and the records
// that it handled those event ids commit in one transaction; a redelivery finds its record and
// does nothing. Deliveries racing each other serialize on the primary key.
import type { Db, Tx } from "../data/db.js";

/**
 * Applies `effect` to each event not yet handled by `consumer`, all in one transaction (one
 * statement records the whole batch in the inbox); resolves to the events that were new. If any
 * effect throws, nothing of the batch is kept.
 */
export function applyOnce<E extends { id: string }>(db: Db, consumer: string, events: readonly E[], effect: (q: Tx, event: E) => Promise<void>): Promise<E[]> {
  return applyOnceAll(db, consumer, events, async (q, fresh) => {
    for (const event of fresh) await effect(q, event);
  });
}

/** As applyOnce, with one effect for all the new events at once (set-based SQL), in their order. */
export function applyOnceAll<E extends { id: string }>(db: Db, consumer: string, events: readonly E[], effect: (q: Tx, fresh: E[]) => Promise<void>): Promise<E[]> {
  return db.tx(async (q) => {
    const rows = await q.query<{ event_id: string }>(
      "INSERT INTO inbox (consumer, event_id) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING RETURNING event_id",
      [consumer, [...new Set(events.map((e) => e.id))].sort()], // one key order for every batch: racing batches cannot deadlock
    );
    const fresh = new Set(rows.map((r) => r.event_id));
    const applied = events.filter((event) => fresh.delete(event.id)); // not handled before, nor twice in this batch
    if (applied.length) await effect(q, applied);
    return applied;
  });
}
