// OrderService handlers and order's part of the saga.
import { createHash } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { v7 as uuidv7 } from "uuid";
import type { Product } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { StockRejectedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { OrderCancelledSchema, OrderConfirmedSchema, OrderCreatedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { CreateOrderRequestSchema, OrderService, OrderStatus, type CreateOrderRequest, type Order } from "../../gen/shop/order/v1/order_pb.js";
import { PaymentCapturedSchema, PaymentFailedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { listScope, mayAccess, requireUser } from "../../mesh/rpc/call-scope.js";
import { pageLimit, pageToken, paginate } from "../../mesh/rpc/paging.js";
import { isUniqueViolation, type Db, type Tx } from "../../mesh/data/db.js";
import { byOrderId, on, type EventHandlerSpec } from "../../mesh/events/eventing.js";
import { enqueue } from "../../mesh/events/outbox.js";
import { createStore, isTerminal, statusName, type StoredOrder } from "./store.js";
import type { Prices } from "./prices.js";
import type { OrderWatchers } from "./watchers.js";

const source = { source: "order" };

export interface OrderDeps {
  db: Db;
  /** The catalog's products and prices (prices.ts). */
  prices: Prices;
  watchers: OrderWatchers;
  /** How long an order may stay PENDING before it is cancelled (ORDER_TIMEOUT_SECONDS). */
  timeoutSeconds: number;
}

/** What order's saga steps need: the consumers and the timeout sweeper. */
type SagaDeps = Pick<OrderDeps, "db" | "watchers">;

/**
 * How long past its timeout a still-PENDING order's WatchOrder stays open: enough for the sweeper
 * (which runs at most 5 s apart) to cancel it. After that the stream ends with DEADLINE_EXCEEDED.
 */
const WATCH_GRACE_MS = 10_000;

/** Same body, same hash: the request without its idempotency key, in protobuf's binary form. */
const requestHash = (req: CreateOrderRequest) =>
  createHash("sha256").update(toBinary(CreateOrderRequestSchema, create(CreateOrderRequestSchema, { ...req, idempotencyKey: "" }))).digest("base64url");

const notFound = (id: string) => new ConnectError(`order ${id} not found`, Code.NotFound);

/**
 * Cancels a PENDING order and publishes order.cancelled; undefined if it had already left PENDING.
 * `stockReserved`: whether order knows the stock was reserved. It learns so only from payment's
 * outcome, since payment acts on reserved orders alone: a consumer of stock.reserved just for this
 * hint cost a delivery and a transaction per order, and the compensators never read it.
 */
async function cancel(q: Tx, orderId: string, reason: string, { stockReserved = false } = {}): Promise<StoredOrder | undefined> {
  const stored = await createStore(q).transition(orderId, "cancelled", reason);
  if (stored) {
    enqueue(q, OrderCancelledSchema, {
      orderId,
      userId: stored.order.userId,
      reason,
      stockReserved,
      paymentCaptured: false, // a captured payment confirms the order, which then cannot be cancelled
      cancelTime: stored.order.updateTime,
      paymentMethodToken: stored.paymentMethodToken,
    }, source);
  }
  return stored;
}

export function orderHandlers({ db, prices, watchers, timeoutSeconds }: OrderDeps): ServiceImpl<typeof OrderService> {
  const store = createStore(db);
  const visible = async (ctx: Parameters<typeof mayAccess>[0], id: string) => {
    const stored = await store.byId(id);
    if (!stored || !mayAccess(ctx, stored.order.userId)) throw notFound(id);
    return stored.order;
  };

  const replay = (existing: StoredOrder, hash: string) => {
    if (existing.requestHash !== hash) {
      throw new ConnectError("this idempotency key was used for a different order", Code.FailedPrecondition);
    }
    return { order: existing.order };
  };

  return {
    async createOrder(req, ctx) {
      const user = requireUser(ctx);
      const key = req.idempotencyKey || undefined;
      const hash = requestHash(req);
      // A retry (the same key) is found by the insert below, which refuses its key: looking first
      // cost every new order a statement. Only when the catalog cannot price it is a retry looked
      // up here, so an order once placed is answered even while the catalog is away.
      // Prices come from the catalog (through order's cache of its answers, prices.ts), never from the client.
      let products: Product[];
      try {
        products = await prices.of(req.lines.map((l) => l.productId));
      } catch (err) {
        const existing = key && (await store.byIdempotencyKey(user.id, key));
        if (existing) return replay(existing, hash);
        throw err;
      }
      const currencies = new Set(products.map((p) => p.price?.currencyCode));
      if (currencies.size !== 1) throw new ConnectError("the products are priced in different currencies; order them separately", Code.FailedPrecondition);
      const lines = req.lines.map((l, i) => ({
        productId: l.productId,
        productName: products[i]!.name,
        quantity: l.quantity,
        unitPriceMinor: products[i]!.price!.amountMinor,
      }));
      try {
        const order = await db.tx(async (q) => {
          const created = await createStore(q).insert({
            id: uuidv7(), userId: user.id, currency: [...currencies][0]!, lines, shipping: req.shippingAddress!, idempotencyKey: key, requestHash: hash,
            paymentMethodToken: req.paymentMethod?.token ?? "",
          });
          enqueue(q, OrderCreatedSchema, {
            orderId: created.id, userId: created.userId, lines: created.lines, total: created.total, createTime: created.createTime,
            paymentMethod: { token: req.paymentMethod?.token }, // only the token: card numbers stay in payment
          }, source);
          return created;
        });
        return { order };
      } catch (err) {
        // The same key raced in from a retry: answer as the first one did.
        if (key && isUniqueViolation(err)) return replay((await store.byIdempotencyKey(user.id, key))!, hash);
        throw err;
      }
    },

    async getOrder(req, ctx) {
      return { order: await visible(ctx, req.id) };
    },

    async listOrders(req, ctx) {
      const limit = pageLimit(req.pageSize);
      const rows = await store.page({
        userId: listScope(ctx, req.userId),
        status: req.status ? statusName(req.status) : undefined,
        beforeId: pageToken.decode(req.pageToken),
        limit: limit + 1,
      });
      const { page, nextPageToken } = paginate(rows, limit);
      return { orders: page, nextPageToken };
    },

    async cancelOrder(req, ctx) {
      await visible(ctx, req.id);
      const cancelled = await db.tx((q) => cancel(q, req.id, req.reason || "cancelled by the customer"));
      if (cancelled) {
        watchers.changed(req.id);
        return { order: cancelled.order };
      }
      // It had already left PENDING: cancelling again changes nothing; a confirmed order stays.
      const order = await visible(ctx, req.id);
      if (order.status === OrderStatus.CONFIRMED) throw new ConnectError("a confirmed order can no longer be cancelled", Code.FailedPrecondition);
      return { order };
    },

    // Ends when the order is terminal, at the caller's deadline, or at the latest WATCH_GRACE_MS after
    // the order's own timeout (by then the sweeper has cancelled it, unless it cannot reach the database).
    async *watchOrder(req, ctx) {
      let order: Order = await visible(ctx, req.id);
      yield { order };
      const giveUpAt = timestampMs(order.createTime!) + timeoutSeconds * 1_000 + WATCH_GRACE_MS;
      while (!isTerminal(order) && !ctx.signal.aborted) {
        const left = giveUpAt - Date.now();
        if (left <= 0) throw new ConnectError(`order ${req.id} is still pending past its ${timeoutSeconds} s timeout; follow it with GetOrder`, Code.DeadlineExceeded);
        await watchers.next(req.id, Math.min(1_000, left), ctx.signal);
        const now = (await store.byId(req.id))!.order;
        if (now.status !== order.status || now.updateTime?.seconds !== order.updateTime?.seconds || now.updateTime?.nanos !== order.updateTime?.nanos) {
          order = now;
          yield { order };
        }
      }
    },
  };
}

/** Order's part of the saga: confirm on payment.captured, cancel on stock.rejected or payment.failed. */
export function orderConsumers({ watchers }: SagaDeps): EventHandlerSpec[] {
  /** After the commit: the order's watchers look again. */
  const wake = ({ data }: { data: { orderId: string } }) => watchers.changed(data.orderId);

  return [
    on({ event: StockRejectedSchema, name: "stock-rejected", apply: async (q, { data }) => void (await cancel(q, data.orderId, "out of stock")), then: wake, key: byOrderId }),
    on({
      event: PaymentFailedSchema,
      name: "payment-failed",
      apply: async (q, { data }) => void (await cancel(q, data.orderId, `payment failed: ${data.reason}`, { stockReserved: true })),
      then: wake,
      key: byOrderId,
    }),
    on({
      event: PaymentCapturedSchema,
      name: "payment-captured",
      then: wake,
      key: byOrderId,
      // The batch's orders confirmed by one statement.
      async applyAll(q, events) {
        // An order cancelled meanwhile stays cancelled: payment refunds it on order.cancelled.
        const confirmed = await createStore(q).transitionAll(events.map(byOrderId), "confirmed");
        for (const { order } of confirmed) {
          const cause = events.find((e) => e.data.orderId === order.id);
          enqueue(q, OrderConfirmedSchema, { orderId: order.id, userId: order.userId, total: order.total, confirmTime: order.updateTime }, { ...source, cause });
        }
      },
    }),
  ];
}

/**
 * The saga's deadline: cancels orders still PENDING `timeoutSeconds` after they were placed (an
 * event dead-lettered, a service down too long), with the usual compensation: order.cancelled
 * makes inventory release the stock and payment void or refund. Each cancellation is one short
 * transaction behind the same guarded UPDATE as every other transition, so a capture racing it
 * either confirms first (the order stays CONFIRMED) or finds it cancelled (payment refunds), and
 * replicas sweeping at once cancel each order once. Resolves to how many it cancelled.
 */
export async function cancelOverdue({ db, watchers }: SagaDeps, timeoutSeconds: number, batch = 100): Promise<number> {
  let cancelled = 0;
  for (;;) {
    const ids = await createStore(db).overdue(timeoutSeconds, batch);
    for (const id of ids) {
      if (await db.tx((q) => cancel(q, id, "timed out waiting for stock and payment"))) {
        cancelled++;
        watchers.changed(id);
      }
    }
    if (ids.length < batch) return cancelled;
  }
}
