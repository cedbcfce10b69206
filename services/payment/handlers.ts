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
  /**
   * Charges once both facts are in: the order (amount, card) and its reserved stock. Called after
   * each of the two events, so whichever arrives second charges. A TransientProcessorError
   * propagates: the event is redelivered and this runs again (the inbox has already recorded the
   * fact, so only the charge is retried).
   */
  async function chargeIfReady(orderId: string) {
    const payment = await createStore(db).byOrder(orderId);
    if (!payment || payment.status !== "pending" || !payment.stock_reserved || !payment.card_number) return;
    const attempt = await createStore(db).countAttempt(payment.id);
    const result = charge(payment.card_number, attempt); // outside any transaction, like a real processor call
    const decided = await db.tx(async (q) => {
      const store = createStore(q);
      await store.lockByOrder(orderId); // a cancellation deciding now goes first or after, never between
      const row = await store.decide(payment.id, result.outcome === "captured" ? { status: "captured" } : { status: "failed", reason: result.reason, code: result.code });
      if (!row) return undefined; // voided meanwhile
      if (result.outcome === "captured") {
        await enqueue(q, PaymentCapturedSchema, {
          paymentId: row.id, orderId, amount: money(row), cardLast4: row.card_last4, captureTime: timestampFromDate(row.updated_at),
        }, source);
      } else {
        await enqueue(q, PaymentFailedSchema, {
          paymentId: row.id, orderId, amount: money(row), reason: result.reason, declineCode: result.code, failTime: timestampFromDate(row.updated_at),
        }, source);
      }
      return row;
    });
    if (decided) {
      logger.info({ order_id: orderId, outcome: result.outcome, attempt }, "charge decided");
      publishOutbox();
    }
  }

  return [
    on({
      event: OrderCreatedSchema,
      name: "record",
      async handler({ id, data }) {
        await handleOnce(db, "record", id, (q) =>
          createStore(q).record({
            id: uuidv7(),
            orderId: data.orderId,
            userId: data.userId,
            amountMinor: data.total?.amountMinor ?? 0n,
            currency: data.total?.currencyCode ?? "XXX",
            card: data.paymentMethod?.cardNumber ?? "",
          }).then(() => {}),
        );
        await chargeIfReady(data.orderId);
      },
    }),
    on({
      event: StockReservedSchema,
      name: "charge",
      async handler({ id, data }) {
        await handleOnce(db, "charge", id, (q) => createStore(q).stockReserved(uuidv7(), data.orderId).then(() => {}));
        await chargeIfReady(data.orderId);
      },
    }),
    on({
      event: OrderCancelledSchema,
      name: "refund",
      async handler({ id, data }) {
        await handleOnce(db, "refund", id, async (q) => {
          const refunded = await createStore(q).cancel(uuidv7(), data.orderId);
          if (refunded) {
            await enqueue(q, PaymentRefundedSchema, {
              paymentId: refunded.id, orderId: refunded.order_id, amount: money(refunded), reason: data.reason, refundTime: timestampFromDate(refunded.updated_at),
            }, source);
          }
        });
        publishOutbox();
      },
    }),
  ];
}
