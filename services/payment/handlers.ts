// PaymentService and payment's part of the saga: charge on stock.reserved (which carries the
// order's amount, customer and payment method), refund or void on order.cancelled.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { StockReservedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { OrderCancelledSchema } from "../../gen/shop/order/v1/events_pb.js";
import { PaymentRefundedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";
import { mayAccess, requireUser } from "../../mesh/rpc/call-scope.js";
import type { Db } from "../../mesh/data/db.js";
import { byOrderId, on, type EventHandlerSpec } from "../../mesh/events/eventing.js";
import { enqueue } from "../../mesh/events/outbox.js";
import type { Logger } from "../../mesh/telemetry.js";
import { announce, source, type createCharger } from "./charger.js";
import { createMethods, toPaymentMethod } from "./methods.js";
import { createStore, money, toPayment } from "./store.js";

export function paymentHandlers(db: Db, methodTtlMs: number): ServiceImpl<typeof PaymentService> {
  return {
    async createPaymentMethod(req, ctx) {
      const user = requireUser(ctx);
      return { paymentMethod: toPaymentMethod(await createMethods(db).create(user.id, req.cardNumber, methodTtlMs)) };
    },

    async getPayment(req, ctx) {
      const row = await createStore(db).byOrder(req.orderId);
      // A placeholder for an order cancelled before payment saw it (no owner) is no payment.
      if (!row || row.user_id === "" || !mayAccess(ctx, row.user_id)) throw new ConnectError(`no payment for order ${req.orderId}`, Code.NotFound);
      return { payment: toPayment(row) };
    },
  };
}

export function paymentConsumers(charger: ReturnType<typeof createCharger>, logger: Logger): EventHandlerSpec[] {
  return [
    on({
      event: StockReservedSchema,
      name: "charge",
      key: byOrderId,
      // stock.reserved carries the order's amount, customer and payment method: the batch's
      // payments are recorded ready to charge and their tokens bound (a statement each for the
      // whole batch), and charged together right after the commit.
      async applyAll(q, events) {
        const charges = events.flatMap(({ data: { orderId, userId, total, paymentMethodToken } }) => {
          if (total && userId) return [{ id: uuidv7(), orderId, userId, amountMinor: total.amountMinor, currency: total.currencyCode, token: paymentMethodToken }];
          // From an inventory older than this: nothing here says what to charge; the order's timeout cancels it.
          logger.warn({ order_id: orderId }, "stock.reserved without the order's amount; not charged");
          return [];
        });
        // An order or a token twice in one batch (a republished event, a token offered for two
        // orders): one by one, so the first in key order is the one recorded, or that gets the card.
        const once = (key: (c: (typeof charges)[number]) => string) => new Set(charges.map(key)).size === charges.length;
        const groups = once((c) => c.orderId) && once((c) => c.token) ? [charges] : charges.map((c) => [c]);
        const store = createStore(q);
        const methods = createMethods(q);
        for (const group of groups) {
          if (!group.length) continue;
          const pending = (await store.record(group)).filter((row) => row.status === "pending"); // not recorded before, nor cancelled first
          if (!pending.length) continue;
          const charge = new Map(group.map((c) => [c.orderId, c]));
          const bound = await methods.use(pending.map((row) => ({ token: charge.get(row.order_id)!.token, userId: row.user_id, orderId: row.order_id, paymentId: row.id })));
          for (const row of pending.filter((r) => !bound.has(r.id))) {
            const why = await methods.unusable(charge.get(row.order_id)!.token, row.user_id, row.order_id);
            const [failed] = await store.decide([{ id: row.id, outcome: { status: "failed", ...why } }], "pending");
            if (failed) announce(q, failed, events.find((e) => e.data.orderId === row.order_id));
          }
        }
      },
      thenAll: (events) => charger.chargeReady(events.map(byOrderId), new Map(events.map((e) => [e.data.orderId, e]))),
    }),
    on({
      event: OrderCancelledSchema,
      name: "refund",
      key: byOrderId,
      async apply(q, { data }) {
        // The order's card goes, whether or not its payment ever got this far.
        if (data.paymentMethodToken) await createMethods(q).discard(data.paymentMethodToken, data.userId);
        const refunded = await createStore(q).cancel(uuidv7(), data.orderId, data.reason || "order cancelled");
        if (refunded) {
          enqueue(q, PaymentRefundedSchema, {
            paymentId: refunded.id, orderId: refunded.order_id, amount: money(refunded), reason: data.reason, refundTime: timestampFromDate(refunded.updated_at),
          }, source);
        }
      },
    }),
  ];
}
