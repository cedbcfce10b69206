// InventoryService handlers and inventory's part of the order saga.
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { StockRejectedSchema, StockReleasedSchema, StockReservedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { InventoryService } from "../../gen/shop/inventory/v1/inventory_pb.js";
import { OrderCancelledSchema, OrderConfirmedSchema, OrderCreatedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { PaymentFailedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { requireAdmin } from "../../mesh/rpc/call-scope.js";
import type { Db, Tx } from "../../mesh/data/db.js";
import { byOrderId, on, type EventHandlerSpec } from "../../mesh/events/eventing.js";
import { enqueue } from "../../mesh/events/outbox.js";
import { createStore, type Line } from "./store.js";

export function inventoryHandlers(db: Db): ServiceImpl<typeof InventoryService> {
  return {
    async getStock(req) {
      return { stock: await createStore(db).get(req.productId) };
    },
    async adjustStock(req, ctx) {
      const caller = requireAdmin(ctx);
      const stock = await db.tx((q) => createStore(q).adjust(req.productId, req.delta, req.reason, caller.user?.id ?? caller.service));
      if (!stock) throw new ConnectError(`adjusting ${req.productId} by ${req.delta} would take its stock below zero`, Code.FailedPrecondition);
      return { stock };
    },
  };
}

const source = { source: "inventory" };

/** Reacts to the saga: reserve on order.created; release on payment.failed or order.cancelled; commit on order.confirmed. */
export function inventoryConsumers(): EventHandlerSpec[] {
  const release = (orderCancelled: boolean, reason: string) => async (q: Tx, { data }: { data: { orderId: string } }) => {
    const store = createStore(q);
    const lines = orderCancelled ? await store.cancelOrder(data.orderId) : await store.release(data.orderId);
    if (lines.length) enqueue(q, StockReleasedSchema, { orderId: data.orderId, reason, lines }, source);
  };

  return [
    on({
      event: OrderCreatedSchema,
      name: "reserve",
      key: byOrderId,
      // All lines or none, per order: stock.reserved, or stock.rejected naming every shortage. The
      // batch's orders are reserved together, in a few statements whatever their number.
      async applyAll(q, events) {
        const orders = events.map(({ data }) => ({ orderId: data.orderId, lines: data.lines.map((l): Line => ({ productId: l.productId, quantity: l.quantity })) }));
        const outcomes = await createStore(q).reserveOrders(orders);
        events.forEach((event, i) => {
          const { data } = event;
          const outcome = outcomes.get(data.orderId)!;
          const meta = { ...source, cause: event };
          if (outcome === "closed") return; // cancelled before we saw it created: nothing to reserve, nothing to publish
          if (outcome.length) enqueue(q, StockRejectedSchema, { orderId: data.orderId, reason: "insufficient stock", shortages: outcome }, meta);
          // What payment needs to charge comes along: it waits for this event alone.
          else enqueue(q, StockReservedSchema, { orderId: data.orderId, lines: orders[i]!.lines, userId: data.userId, total: data.total, paymentMethodToken: data.paymentMethod?.token }, meta);
        });
      },
    }),
    on({ event: PaymentFailedSchema, name: "release-on-payment-failed", apply: release(false, "payment failed"), key: byOrderId }),
    on({ event: OrderCancelledSchema, name: "release-on-order-cancelled", apply: release(true, "order cancelled"), key: byOrderId }),
    // Reserved → committed, guarded by the status: a redelivery finds nothing left to commit.
    on({ event: OrderConfirmedSchema, name: "commit", applyIdempotent: async (q, events) => void (await createStore(q).commitOrders(events.map(byOrderId))), key: byOrderId }),
  ];
}
