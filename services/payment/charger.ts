// Charging a payment, at most one processor call per payment however events race or processes
// die: the caller that claims the payment (pending → charging, a guarded UPDATE) calls the
// processor with the payment id as idempotency key, then records the answer in one transaction
// with its event. A claim is a lease: if its holder dies or the call fails, the lease runs out and
// the next attempt (a redelivered event, or the sweep) asks again with the same key, which the
// processor answers without charging twice.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { PaymentCapturedSchema, PaymentFailedSchema, PaymentRefundedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import type { Db, Tx } from "../../mesh/data/db.js";
import { enqueue } from "../../mesh/events/outbox.js";
import type { EventMeta } from "../../mesh/events/events.js";
import type { Logger } from "../../mesh/telemetry.js";
import type { CardProcessor } from "./processor.js";
import { createStore, money, type PaymentRow } from "./store.js";

export const source = { source: "payment" };

export interface ChargerDeps {
  db: Db;
  logger: Logger;
  processor: CardProcessor;
  /** How long a claim lasts: longer than a processor call may take. */
  leaseMs: number;
}

/** Enqueues the events for a payment that has just been decided; they continue the trace of `cause`, the event that led to it, if given. */
export function announce(q: Tx, row: PaymentRow, cause?: EventMeta["cause"]): void {
  const base = { paymentId: row.id, orderId: row.order_id, amount: money(row) };
  const at = timestampFromDate(row.updated_at);
  const meta = { ...source, cause };
  if (row.status === "failed") {
    enqueue(q, PaymentFailedSchema, { ...base, reason: row.failure_reason, declineCode: row.decline_code, failTime: at }, meta);
    return;
  }
  enqueue(q, PaymentCapturedSchema, { ...base, cardLast4: row.card_last4, captureTime: at }, meta);
  // Captured for an order cancelled while the charge was in flight: given back at once.
  if (row.status === "refunded") enqueue(q, PaymentRefundedSchema, { ...base, reason: row.cancel_reason ?? "order cancelled", refundTime: at }, meta);
}

export function createCharger({ db, logger, processor, leaseMs }: ChargerDeps) {
  /**
   * Charges the orders' payments that are ready and that nobody else is charging: one statement
   * claims them all, the processor is asked for each at once, and one transaction records every
   * answer with its events. A processor error propagates (the events are redelivered) once the
   * other answers are recorded and its claim is freed for the next attempt. `causes`: the events
   * that asked for the charges, by order, whose traces the payments' events continue.
   */
  async function chargeReady(orderIds: readonly string[], causes?: ReadonlyMap<string, EventMeta["cause"]>): Promise<void> {
    const claimed = await createStore(db).claim(orderIds, leaseMs);
    if (!claimed.length) return;
    const results = await Promise.allSettled(claimed.map((c) =>
      processor.charge({ idempotencyKey: c.id, card: c.card_number ?? "", amountMinor: BigInt(c.amount_minor), currency: c.currency })));
    const answers = claimed.flatMap((c, i) => {
      const result = results[i]!;
      if (result.status === "rejected") return [];
      const { value } = result;
      return [{ id: c.id, outcome: value.outcome === "captured" ? { status: "captured" as const } : { status: "failed" as const, reason: value.reason, code: value.code } }];
    });
    const decided = answers.length
      ? await db.tx(async (q) => {
        const rows = await createStore(q).decide(answers);
        for (const row of rows) announce(q, row, causes?.get(row.order_id));
        return rows;
      })
      : [];
    for (const row of decided) logger.info({ order_id: row.order_id, outcome: row.status, attempt: row.attempts }, "charge decided");
    const failed = results.findIndex((r) => r.status === "rejected");
    if (failed === -1) return;
    for (const [i, c] of claimed.entries()) if (results[i]!.status === "rejected") await createStore(db).retrySoon(c.id, c.attempts);
    throw (results[failed] as PromiseRejectedResult).reason;
  }

  /** Finishes charges nobody is carrying any more (crashed while charging, or ready and left behind). */
  async function sweep(): Promise<void> {
    const stranded = (await createStore(db).stranded(leaseMs)).map((r) => r.order_id);
    if (stranded.length) await chargeReady(stranded).catch((err) => logger.warn({ err }, "charge failed; will retry"));
  }

  return { chargeReady, sweep };
}
