// PaymentService and payment's part of the saga: record the charge on order.created, charge on
// stock.reserved, refund (or void) on order.cancelled.
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { StockReservedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { OrderCancelledSchema, OrderCreatedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { PaymentCapturedSchema, PaymentFailedSchema, PaymentRefundedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";
import { mayAccess } from "../../mesh/call-scope.js";
import type { Db } from "../../mesh/db.js";
import { on, type EventHandlerSpec } from "../../mesh/eventing.js";
import { handleOnce } from "../../mesh/inbox.js";
import { enqueue } from "../../mesh/outbox.js";
import type { Logger } from "../../mesh/telemetry.js";
import { charge } from "./processor.js";
import { createStore, money, toPayment } from "./store.js";

export function paymentHandlers(db: Db): ServiceImpl<typeof PaymentService> {
  return {
    async getPayment(req, ctx) {
      const row = await createStore(db).byOrder(req.orderId);
      // A placeholder for an order cancelled before payment saw it (no owner) is no payment.
      if (!row || row.user_id === "" || !mayAccess(ctx, row.user_id)) throw new ConnectError(`no payment for order ${req.orderId}`, Code.NotFound);
      return { payment: toPayment(row) };
    },
  };
}

const source = { source: "payment" };

export function paymentConsumers(db: Db, logger: Logger, publishOutbox: () => void): EventHandlerSpec[] {
  return [
    on({
      event: OrderCreatedSchema,
      name: "record",
      async handler({ id, data }) {
        await handleOnce(db, "record", id, async (q) => {
          await createStore(q).record({
            id: uuidv7(),
            orderId: data.orderId,
            userId: data.userId,
            amountMinor: data.total?.amountMinor ?? 0n,
            currency: data.total?.currencyCode ?? "XXX",
            card: data.paymentMethod?.cardNumber ?? "",
          });
        });
      },
    }),
    on({
      event: StockReservedSchema,
      name: "charge",
      async handler({ id, data }) {
        const payment = await createStore(db).byOrder(data.orderId);
        // order.created travels on another consumer; until it is recorded, retry later.
        if (!payment) throw new Error(`order ${data.orderId} is not known to payment yet`);
        if (payment.status !== "pending") return; // voided (cancelled first) or already decided
        const attempt = await createStore(db).countAttempt(payment.id);
        // The processor call is outside any transaction. A TransientProcessorError propagates:
        // the event is redelivered after a delay and the next attempt is counted as such.
        const result = charge(payment.card_number ?? "", attempt);
        await handleOnce(db, "charge", id, async (q) => {
          const store = createStore(q);
          if (result.outcome === "captured") {
            const row = await store.decide(payment.id, { status: "captured" });
            if (row) {
              await enqueue(q, PaymentCapturedSchema, {
                paymentId: row.id, orderId: row.order_id, amount: money(row), cardLast4: row.card_last4, captureTime: timestampFromDate(row.updated_at),
              }, source);
            }
          } else {
            const row = await store.decide(payment.id, { status: "failed", reason: result.reason, code: result.code });
            if (row) {
              await enqueue(q, PaymentFailedSchema, {
                paymentId: row.id, orderId: row.order_id, amount: money(row), reason: result.reason, declineCode: result.code, failTime: timestampFromDate(row.updated_at),
              }, source);
            }
          }
        });
        logger.info({ order_id: data.orderId, outcome: result.outcome, attempt }, "charge decided");
        publishOutbox();
      },
    }),
    on({
      event: OrderCancelledSchema,
      name: "refund",
      async handler({ id, data }) {
        await handleOnce(db, "refund", id, async (q) => {
          const store = createStore(q);
          const refunded = await store.refund(data.orderId);
          if (refunded) {
            await enqueue(q, PaymentRefundedSchema, {
              paymentId: refunded.id, orderId: refunded.order_id, amount: money(refunded), reason: data.reason, refundTime: timestampFromDate(refunded.updated_at),
            }, source);
          } else {
            await store.void(uuidv7(), data.orderId);
          }
        });
        publishOutbox();
      },
    }),
  ];
}
