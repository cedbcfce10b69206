// The inbox: exactly-once effect for at-least-once delivery. The consumer's effect and the record
// that it handled this event id commit in one transaction; a redelivery finds the record and
// does nothing. Two deliveries racing each other serialize on the primary key.
import type { Db, Queryable } from "../data/db.js";

/** Runs `effect` once per (consumer, eventId); resolves false when the event was already handled. */
export function handleOnce(db: Db, consumer: string, eventId: string, effect: (q: Queryable) => Promise<void>): Promise<boolean> {
  return db.tx(async (q) => {
    const fresh = await q.query("INSERT INTO inbox (consumer, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1", [consumer, eventId]);
    if (fresh.length === 0) return false;
    await effect(q);
    return true;
  });
}
