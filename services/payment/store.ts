// Payment's SQL. Every status change is a guarded UPDATE (… WHERE status = 'pending'), so at most
// one capture per order and a refund only after a capture hold however events interleave.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { PaymentSchema, PaymentStatus, type Payment } from "../../gen/shop/payment/v1/payment_pb.js";
import type { Queryable } from "../../mesh/db.js";

export interface PaymentRow extends Record<string, unknown> {
  id: string;
  order_id: string;
  user_id: string;
  amount_minor: string | number;
  currency: string;
  card_number: string | null;
  card_last4: string;
  status: "pending" | "captured" | "failed" | "refunded" | "voided";
  stock_reserved: boolean;
  attempts: number;
  failure_reason: string;
  decline_code: string;
  created_at: Date;
  updated_at: Date;
}

const STATUS = {
  pending: PaymentStatus.PENDING,
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

export function createStore(q: Queryable) {
  const one = async (sql: string, params: unknown[]) => (await q.query<PaymentRow>(sql, params))[0];
  return {
    byOrder: (orderId: string) => one("SELECT * FROM payments WHERE order_id = $1", [orderId]),

    /** The order's charge (amount, card, owner). Fills a placeholder; never revives a voided row. */
    record: (p: { id: string; orderId: string; userId: string; amountMinor: bigint; currency: string; card: string }) =>
      q.query(
        `INSERT INTO payments (id, order_id, user_id, amount_minor, currency, card_number, card_last4, status)
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending')
         ON CONFLICT (order_id) DO UPDATE SET user_id = EXCLUDED.user_id, amount_minor = EXCLUDED.amount_minor,
           currency = EXCLUDED.currency, card_last4 = EXCLUDED.card_last4,
           card_number = CASE WHEN payments.status = 'pending' THEN EXCLUDED.card_number END, updated_at = now()
         WHERE payments.user_id = ''`,
        [p.id, p.orderId, p.userId, p.amountMinor.toString(), p.currency, p.card, p.card.slice(-4)],
      ),

    /** Notes that the order's stock is reserved, creating a placeholder if the order is not known yet. */
    stockReserved: (id: string, orderId: string) =>
      q.query(
        `INSERT INTO payments (id, order_id, user_id, amount_minor, currency, card_last4, status, stock_reserved)
         VALUES ($1, $2, '', 0, 'XXX', '', 'pending', true)
         ON CONFLICT (order_id) DO UPDATE SET stock_reserved = true`,
        [id, orderId],
      ),

    /** Locks the order's payment row for the rest of the transaction. */
    lockByOrder: (orderId: string) => one("SELECT * FROM payments WHERE order_id = $1 FOR UPDATE", [orderId]),

    /** Counts an attempt before the processor is called, so a retry knows it is one. */
    countAttempt: async (id: string) => (await one("UPDATE payments SET attempts = attempts + 1 WHERE id = $1 RETURNING *", [id]))!.attempts,

    decide: (id: string, outcome: { status: "captured" } | { status: "failed"; reason: string; code: string }) =>
      one(
        `UPDATE payments SET status = $2, failure_reason = $3, decline_code = $4, card_number = NULL, updated_at = now()
         WHERE id = $1 AND status = 'pending' RETURNING *`,
        [id, outcome.status, outcome.status === "failed" ? outcome.reason : "", outcome.status === "failed" ? outcome.code : ""],
      ),

    /**
     * On cancellation: refunds a captured payment, voids a pending one (or records a voided
     * placeholder if the order was never seen). The row is locked first, so a capture deciding at
     * the same moment either commits before (and is refunded here) or finds the row voided.
     * Returns the refunded payment, if any.
     */
    async cancel(id: string, orderId: string): Promise<PaymentRow | undefined> {
      const row = await this.lockByOrder(orderId);
      if (row?.status === "captured") {
        return one("UPDATE payments SET status = 'refunded', updated_at = now() WHERE id = $1 RETURNING *", [row.id]);
      }
      if (!row) {
        await q.query(
          `INSERT INTO payments (id, order_id, user_id, amount_minor, currency, card_last4, status)
           VALUES ($1, $2, '', 0, 'XXX', '', 'voided') ON CONFLICT (order_id) DO NOTHING`,
          [id, orderId],
        );
      } else if (row.status === "pending") {
        await q.query("UPDATE payments SET status = 'voided', card_number = NULL, updated_at = now() WHERE id = $1", [row.id]);
      }
      return undefined;
    },
  };
}
