// Payment's SQL. A payment's life: pending → charging → captured | failed, and refunded after a
// capture or voided before one when its order is cancelled. Every change is a guarded UPDATE or an
// upsert (which locks the row, existing or just inserted, for the rest of the transaction), so at
// most one capture per order, a refund only after a capture, and no lost cancellation hold however
// stock.reserved and order.cancelled interleave or repeat, under PostgreSQL's READ COMMITTED.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { PaymentSchema, PaymentStatus, type Payment } from "../../gen/shop/payment/v1/payment_pb.js";
import type { Queryable } from "../../mesh/data/db.js";
import { createMethods } from "./methods.js";

export interface PaymentRow extends Record<string, unknown> {
  id: string;
  order_id: string;
  user_id: string;
  amount_minor: string | number;
  currency: string;
  card_last4: string;
  status: "pending" | "charging" | "captured" | "failed" | "refunded" | "voided";
  stock_reserved: boolean;
  attempts: number;
  lease_until: Date | null;
  /** Set when the order was cancelled while its charge was in flight. */
  cancel_reason: string | null;
  failure_reason: string;
  decline_code: string;
  created_at: Date;
  updated_at: Date;
}

const STATUS = {
  pending: PaymentStatus.PENDING,
  charging: PaymentStatus.PENDING, // still being decided
  captured: PaymentStatus.CAPTURED,
  failed: PaymentStatus.FAILED,
  refunded: PaymentStatus.REFUNDED,
  voided: PaymentStatus.VOIDED,
} as const;

export const money = (row: PaymentRow) => ({ amountMinor: BigInt(row.amount_minor), currencyCode: row.currency.trim() });

export const toPayment = (row: PaymentRow): Payment =>
  create(PaymentSchema, {
    id: row.id,
    orderId: row.order_id,
    amount: money(row),
    status: STATUS[row.status],
    failureReason: row.failure_reason,
    declineCode: row.decline_code,
    cardLast4: row.card_last4,
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });

export type Decision = { status: "captured" } | { status: "failed"; reason: string; code: string };

export function createStore(q: Queryable) {
  const one = async (sql: string, params: unknown[]) => (await q.query<PaymentRow>(sql, params))[0];
  return {
    byOrder: (orderId: string) => one("SELECT * FROM payments WHERE order_id = $1", [orderId]),

    /**
     * The orders' charges (amount, owner), ready to charge: their stock is reserved. Fills a
     * cancellation's placeholder but never revives it (it stays voided). Returns the rows recorded
     * now (not those recorded before), in one statement for any number of orders (each order once).
     */
    record: (charges: readonly { id: string; orderId: string; userId: string; amountMinor: bigint; currency: string }[]) =>
      q.query<PaymentRow>(
        `INSERT INTO payments (id, order_id, user_id, amount_minor, currency, card_last4, status, stock_reserved)
         SELECT id, order_id, user_id, amount_minor, currency, '', 'pending', true
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bigint[], $5::text[]) AS c(id, order_id, user_id, amount_minor, currency)
         ON CONFLICT (order_id) DO UPDATE SET user_id = EXCLUDED.user_id, amount_minor = EXCLUDED.amount_minor,
           currency = EXCLUDED.currency, stock_reserved = true, updated_at = now()
         WHERE payments.user_id = ''
         RETURNING *`,
        [charges.map((c) => c.id), charges.map((c) => c.orderId), charges.map((c) => c.userId), charges.map((c) => c.amountMinor.toString()), charges.map((c) => c.currency)],
      ),

    /**
     * Takes the right to call the processor for the orders' payments: moves each that is ready
     * (order known, stock reserved) from pending to charging for `leaseMs`, or takes over a charge
     * whose lease ran out (its process died or hung). At most one caller gets a row back, with the
     * card to charge (kept until this charge is decided). One statement for any number of orders.
     */
    claim: (orderIds: readonly string[], leaseMs: number) =>
      q.query<PaymentRow & { card_number: string | null }>(
        `UPDATE payments SET status = 'charging', attempts = attempts + 1, lease_until = now() + $2 * interval '1 millisecond', updated_at = now()
         WHERE order_id = ANY($1::uuid[]) AND stock_reserved AND user_id <> ''
           AND (status = 'pending' OR (status = 'charging' AND lease_until <= now()))
         RETURNING *, (SELECT card_number FROM payment_methods m WHERE m.order_id = payments.order_id) AS card_number`,
        [orderIds, leaseMs],
      ),

    /** After a failed processor call: lets the next attempt (redelivery or sweep) take the charge over now. */
    retrySoon: (id: string, attempts: number) =>
      q.query("UPDATE payments SET lease_until = now() WHERE id = $1 AND status = 'charging' AND attempts = $2", [id, attempts]),

    /**
     * Records the answers for payments being charged (or, with from "pending", ones that cannot be:
     * their payment method is unusable) and erases their cards, in one statement. A capture for an
     * order cancelled meanwhile is recorded as refunded at once. Returns the payments decided here
     * (not those another caller recorded first).
     */
    decide: (answers: readonly { id: string; outcome: Decision }[], from: "charging" | "pending" = "charging") =>
      q.query<PaymentRow>(
        `WITH answers AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[]) AS a(id, status, reason, code)),
         decided AS (
           UPDATE payments p SET status = CASE WHEN a.status = 'captured' AND p.cancel_reason IS NOT NULL THEN 'refunded' ELSE a.status END,
             failure_reason = a.reason, decline_code = a.code, lease_until = NULL, updated_at = now()
           FROM answers a WHERE p.id = a.id AND p.status = $5 RETURNING p.*),
         erased AS (UPDATE payment_methods SET card_number = NULL WHERE order_id IN (SELECT order_id FROM decided))
         SELECT * FROM decided`,
        [
          answers.map((a) => a.id),
          answers.map((a) => a.outcome.status),
          answers.map((a) => (a.outcome.status === "failed" ? a.outcome.reason : "")),
          answers.map((a) => (a.outcome.status === "failed" ? a.outcome.code : "")),
          from,
        ],
      ),

    /** Ready payments nobody is charging: a crashed charge whose lease ran out, or a ready one left behind. */
    stranded: (olderThanMs: number) =>
      q.query<{ order_id: string }>(
        `SELECT order_id FROM payments
         WHERE status IN ('pending', 'charging') AND stock_reserved AND user_id <> ''
           AND (lease_until <= now() OR (status = 'pending' AND updated_at < now() - $1 * interval '1 millisecond'))
         LIMIT 100`,
        [olderThanMs],
      ),

    /**
     * On cancellation: refunds a captured payment and voids a pending one. The upsert creates the
     * row if the order is not known yet (a voided placeholder that record() fills but never
     * revives) and locks it either way, so a concurrent record, claim or decision goes wholly
     * before or after this. A charge in flight is marked: its outcome is refunded when recorded.
     * Returns the refunded payment, if any.
     */
    async cancel(id: string, orderId: string, reason: string): Promise<PaymentRow | undefined> {
      const row = (await one(
        `INSERT INTO payments (id, order_id, user_id, amount_minor, currency, card_last4, status, cancel_reason)
         VALUES ($1, $2, '', 0, 'XXX', '', 'voided', $3)
         ON CONFLICT (order_id) DO UPDATE SET cancel_reason = COALESCE(payments.cancel_reason, EXCLUDED.cancel_reason)
         RETURNING *`,
        [id, orderId, reason],
      ))!;
      if (row.status === "captured") return one("UPDATE payments SET status = 'refunded', updated_at = now() WHERE id = $1 RETURNING *", [row.id]);
      if (row.status === "pending") {
        await q.query("UPDATE payments SET status = 'voided', updated_at = now() WHERE id = $1", [row.id]);
        await createMethods(q).erase(orderId);
      }
      return undefined;
    },
  };
}
