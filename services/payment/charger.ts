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
import type { Logger } from "../../mesh/telemetry.js";
import type { CardProcessor, ChargeResult } from "./processor.js";
import { createStore, money, type PaymentRow } from "./store.js";

export const source = { source: "payment" };

export interface ChargerDeps {
  db: Db;
  logger: Logger;
  processor: CardProcessor;
  /** How long a claim lasts: longer than a processor call may take. */
  leaseMs: number;
}

/** Enqueues the events for a payment that has just been decided (captured, refunded at once, or failed). */
export function announce(q: Tx, row: PaymentRow): void {
  const base = { paymentId: row.id, orderId: row.order_id, amount: money(row) };
  const at = timestampFromDate(row.updated_at);
  if (row.status === "failed") {
    enqueue(q, PaymentFailedSchema, { ...base, reason: row.failure_reason, declineCode: row.decline_code, failTime: at }, source);
    return;
  }
  enqueue(q, PaymentCapturedSchema, { ...base, cardLast4: row.card_last4, captureTime: at }, source);
  // Captured for an order cancelled while the charge was in flight: given back at once.
  if (row.status === "refunded") enqueue(q, PaymentRefundedSchema, { ...base, reason: row.cancel_reason ?? "order cancelled", refundTime: at }, source);
}

export function createCharger({ db, logger, processor, leaseMs }: ChargerDeps) {
  /**
   * Charges the order's payment if it is ready and nobody else is charging it. A processor error
   * propagates (the event is redelivered) after freeing the claim for the next attempt.
   */
  async function chargeIfReady(orderId: string): Promise<void> {
    const claimed = await createStore(db).claim(orderId, leaseMs);
    if (!claimed) return;
    let result: ChargeResult;
    try {
      result = await processor.charge({ idempotencyKey: claimed.id, card: claimed.card_number ?? "", amountMinor: BigInt(claimed.amount_minor), currency: claimed.currency });
    } catch (err) {
      await createStore(db).retrySoon(claimed.id, claimed.attempts);
      throw err;
    }
    const decided = await db.tx(async (q) => {
      const row = await createStore(q).decide(claimed.id, result.outcome === "captured" ? { status: "captured" } : { status: "failed", reason: result.reason, code: result.code });
      if (row) announce(q, row);
      return row;
    });
    if (decided) {
      logger.info({ order_id: orderId, outcome: decided.status, attempt: claimed.attempts }, "charge decided");
    }
  }

  /** Finishes charges nobody is carrying any more (crashed while charging, or ready and left behind). */
  async function sweep(): Promise<void> {
    for (const { order_id } of await createStore(db).stranded(leaseMs)) {
      await chargeIfReady(order_id).catch((err) => logger.warn({ err, order_id }, "charge failed; will retry"));
    }
  }

  return { chargeIfReady, sweep };
}
