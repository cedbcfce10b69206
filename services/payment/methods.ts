// Payment methods: the only place card numbers are kept. A token pays for one order of the
// customer who created it, before it expires; the card number is erased once that order's charge
// is decided, and expired tokens are purged.
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { PaymentMethodSchema, type PaymentMethod } from "../../gen/shop/payment/v1/payment_pb.js";
import type { Queryable } from "../../mesh/data/db.js";

interface MethodRow extends Record<string, unknown> {
  token: string;
  user_id: string;
  card_number: string | null;
  card_last4: string;
  expires_at: Date;
  order_id: string | null;
}

/** Why a token cannot pay for an order; "payment_method_unusable" is its decline code. */
export type Unusable = { code: "payment_method_unusable"; reason: string };

export const toPaymentMethod = (row: MethodRow): PaymentMethod =>
  create(PaymentMethodSchema, { token: row.token, cardLast4: row.card_last4, expireTime: timestampFromDate(row.expires_at) });

export function createMethods(q: Queryable) {
  const one = async (sql: string, params: unknown[]) => (await q.query<MethodRow>(sql, params))[0];
  return {
    create: (userId: string, card: string, ttlMs: number) =>
      one(
        `INSERT INTO payment_methods (token, user_id, card_number, card_last4, expires_at)
         VALUES ($1, $2, $3, $4, now() + $5 * interval '1 millisecond') RETURNING *`,
        [`pm_${randomBytes(24).toString("base64url")}`, userId, card, card.slice(-4), ttlMs],
      ) as Promise<MethodRow>,

    /**
     * Binds each token to its order, once: it must be the customer's, unexpired and unused (by
     * another order; the same order again is a redelivery), and gives its card's last four digits
     * to the order's payment. One statement for any number of orders (each token once); returns the
     * payments whose token was bound.
     */
    async use(uses: readonly { token: string; userId: string; orderId: string; paymentId: string }[]): Promise<Set<string>> {
      const rows = await q.query<{ payment_id: string }>(
        `WITH wanted AS (SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[]) AS w(token, user_id, order_id, payment_id)),
         used AS (
           UPDATE payment_methods m SET order_id = w.order_id FROM wanted w
           WHERE m.token = w.token AND m.user_id = w.user_id AND m.expires_at > now() AND m.card_number IS NOT NULL AND (m.order_id IS NULL OR m.order_id = w.order_id)
           RETURNING w.payment_id, m.card_last4),
         shown AS (UPDATE payments p SET card_last4 = used.card_last4 FROM used WHERE p.id = used.payment_id)
         SELECT payment_id FROM used`,
        [uses.map((u) => u.token), uses.map((u) => u.userId), uses.map((u) => u.orderId), uses.map((u) => u.paymentId)],
      );
      return new Set(rows.map((r) => r.payment_id));
    },

    /** Why the token could not pay for the order (after use() did not bind it). */
    async unusable(token: string, userId: string, orderId: string): Promise<Unusable> {
      const found = await one("SELECT * FROM payment_methods WHERE token = $1 AND user_id = $2", [token, userId]);
      const reason = !found
        ? "the payment details are unknown; please enter your card again"
        : found.order_id && found.order_id !== orderId
          ? "the payment details were already used for another order; please enter your card again"
          : "the payment details have expired; please enter your card again";
      return { code: "payment_method_unusable", reason };
    },

    /**
     * Erases the card behind a cancelled order's token if no payment took the token yet (its order
     * never reached payment). A token a payment took is left to that payment: erased when its
     * charge is decided or voided. A later stock.reserved finds the payment voided.
     */
    discard: (token: string, userId: string) =>
      q.query("UPDATE payment_methods SET card_number = NULL WHERE token = $1 AND user_id = $2 AND order_id IS NULL", [token, userId]),

    /** Erases the card of the order's payment method: its charge is decided or voided. */
    erase: (orderId: string) => q.query("UPDATE payment_methods SET card_number = NULL WHERE order_id = $1", [orderId]),

    /** Deletes expired tokens that never paid for anything, and those whose card is already erased. */
    purgeExpired: () => q.query("DELETE FROM payment_methods WHERE expires_at <= now() AND (order_id IS NULL OR card_number IS NULL)"),
  };
}
