// PaymentService and payment's part of the saga: record the charge on order.created, note the
// reserved stock on stock.reserved (whichever comes second charges), refund or void on
// order.cancelled.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { StockReservedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { OrderCancelledSchema, OrderCreatedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { PaymentRefundedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";
import { mayAccess, requireUser } from "../../mesh/rpc/call-scope.js";
import type { Db } from "../../mesh/data/db.js";
import { byOrderId, on, type EventHandlerSpec } from "../../mesh/events/eventing.js";
import { enqueue } from "../../mesh/events/outbox.js";
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

export function paymentConsumers(charger: ReturnType<typeof createCharger>): EventHandlerSpec[] {
  /** After the commit (and again on a redelivery): charge, if the payment is ready and nobody is charging it. */
  const charge = ({ data }: { data: { orderId: string } }) => charger.chargeIfReady(data.orderId);
  return [
    on({
      event: OrderCreatedSchema,
      name: "record",
      key: byOrderId,
      async apply(q, { data }) {
        const { orderId, userId } = data;
        const store = createStore(q);
        const row = await store.record({ id: uuidv7(), orderId, userId, amountMinor: data.total?.amountMinor ?? 0n, currency: data.total?.currencyCode ?? "XXX" });
        if (row?.status !== "pending") return; // recorded before, or cancelled first: no card needed
        const methods = createMethods(q);
        const legacyCard = data.paymentMethod?.cardNumber; // an event from before tokens (deprecated field)
        if (legacyCard && !data.paymentMethod?.token) await methods.adoptLegacyCard(userId, legacyCard, orderId);
        const method = await methods.use(data.paymentMethod?.token || `pm_legacy_${orderId}`, userId, orderId);
        if ("cardLast4" in method) {
          await store.setCardLast4(row.id, method.cardLast4);
          return;
        }
        const failed = await store.decide(row.id, { status: "failed", ...method }, "pending");
        if (failed) await announce(q, failed);
      },
      then: charge,
    }),
    on({
      event: StockReservedSchema,
      name: "charge",
      key: byOrderId,
      apply: async (q, { data }) => void (await createStore(q).stockReserved(uuidv7(), data.orderId)),
      then: charge,
    }),
    on({
      event: OrderCancelledSchema,
      name: "refund",
      key: byOrderId,
      async apply(q, { data }) {
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
