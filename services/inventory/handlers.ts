// InventoryService handlers and inventory's part of the order saga.
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { StockRejectedSchema, StockReleasedSchema, StockReservedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { InventoryService } from "../../gen/shop/inventory/v1/inventory_pb.js";
import { OrderCancelledSchema, OrderConfirmedSchema, OrderCreatedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { PaymentFailedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { requireAdmin } from "../../mesh/rpc/call-scope.js";
import type { Db } from "../../mesh/data/db.js";
import { on, type EventHandlerSpec } from "../../mesh/events/eventing.js";
import { handleOnce } from "../../mesh/events/inbox.js";
import { enqueue } from "../../mesh/events/outbox.js";
import { createStore, Shortage, type Line } from "./store.js";

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
export function inventoryConsumers(db: Db, publishOutbox: () => void): EventHandlerSpec[] {
  const release = (consumer: string, orderCancelled: boolean) => async (orderId: string, eventId: string, reason: string) => {
    await handleOnce(db, consumer, eventId, async (q) => {
      const store = createStore(q);
      const lines = orderCancelled ? await store.cancelOrder(orderId) : await store.settle(orderId, "released");
      if (lines.length) await enqueue(q, StockReleasedSchema, { orderId, reason, lines }, source);
    });
    publishOutbox();
  };

  return [
    on({
      event: OrderCreatedSchema,
      name: "reserve",
      async handler({ id, data }) {
        const lines: Line[] = data.lines.map((l) => ({ productId: l.productId, quantity: l.quantity }));
        try {
          // All lines or none: a shortage throws, rolling back every line and the inbox record.
          await handleOnce(db, "reserve", id, async (q) => {
            // Cancelled before we saw it created: nothing to reserve, nothing to publish.
            if ((await createStore(q).reserveOrder(data.orderId, lines)) === "closed") return;
            await enqueue(q, StockReservedSchema, { orderId: data.orderId, lines }, source);
          });
        } catch (err) {
          if (!(err instanceof Shortage)) throw err;
          await handleOnce(db, "reserve", id, async (q) => {
            const available = await createStore(q).available(lines.map((l) => l.productId));
            const shortages = lines
              .filter((l) => (available.get(l.productId) ?? 0) < l.quantity)
              .map((l) => ({ productId: l.productId, requestedQuantity: l.quantity, availableQuantity: available.get(l.productId) ?? 0 }));
            await enqueue(q, StockRejectedSchema, { orderId: data.orderId, reason: "insufficient stock", shortages }, source);
          });
        }
        publishOutbox();
      },
    }),
    on({ event: PaymentFailedSchema, name: "release-on-payment-failed", handler: ({ id, data }) => release("release-on-payment-failed", false)(data.orderId, id, "payment failed") }),
    on({ event: OrderCancelledSchema, name: "release-on-order-cancelled", handler: ({ id, data }) => release("release-on-order-cancelled", true)(data.orderId, id, "order cancelled") }),
    on({
      event: OrderConfirmedSchema,
      name: "commit",
      async handler({ id, data }) {
        await handleOnce(db, "commit", id, async (q) => void (await createStore(q).settle(data.orderId, "committed")));
      },
    }),
  ];
}
