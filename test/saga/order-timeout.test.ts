// The saga's deadline: an order whose stock or payment never comes (its service down, its event
// dead-lettered) is cancelled after ORDER_TIMEOUT_SECONDS with the usual compensation, and
// WatchOrder on it ends instead of polling forever.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { InventoryService } from "../../gen/shop/inventory/v1/inventory_pb.js";
import { OrderService, OrderStatus, type Order } from "../../gen/shop/order/v1/order_pb.js";
import { PaymentCapturedSchema, PaymentRefundedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { PaymentService, PaymentStatus } from "../../gen/shop/payment/v1/payment_pb.js";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { demoProducts } from "../../services/catalog/demo.js";
import { testCards } from "../../services/payment/processor.js";
import { cardToken } from "../support/payments.js";
import { eventually } from "../support/eventually.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { rejection } from "../support/servers.js";
import { storedEvents } from "../support/streams.js";

const TIMEOUT_SECONDS = 3;
let mesh: TestMesh;
const ADA = uuidv7();
let orders: MeshClient<typeof OrderService>;

beforeAll(async () => {
  mesh = await startMesh({ env: { order: { ORDER_TIMEOUT_SECONDS: String(TIMEOUT_SECONDS) } } });
  orders = await mesh.as(OrderService, "order", ADA);
}, 240_000);
afterAll(() => mesh?.stop());

/** Services a test stopped; each test leaves the mesh whole for the next, whatever happened. */
const down = new Set<"inventory" | "payment">();
const stop = async (name: "inventory" | "payment") => {
  await mesh.stopService(name);
  down.add(name);
};
const restart = async (name: "inventory" | "payment") => {
  down.delete(name);
  await mesh.startService(name);
};
afterEach(async () => {
  for (const name of [...down]) await restart(name);
});

const address = { recipientName: "Ada Lovelace", addressLines: ["12 St James's Square"], city: "London", postalCode: "SW1Y 4JH", countryCode: "GB" };
/** A payment method token, made while payment is up (the card goes to payment, the order gets the token). */
const token = async () => cardToken(await mesh.as(PaymentService, "payment", ADA), testCards.success);
const place = async (productId: string, paymentToken?: string) =>
  (await orders.createOrder({ lines: [{ productId, quantity: 1 }], shippingAddress: address, paymentMethod: { token: paymentToken ?? (await token()) } })).order!;

/**
 * Follows WatchOrder with no deadline of its own; returns every update once the stream ends. The
 * race only keeps a stream that never ends from hanging the test.
 */
async function watchToEnd(id: string): Promise<Order[]> {
  const seen: Order[] = [];
  const follow = (async () => {
    for await (const update of orders.watchOrder({ id })) seen.push(update.order!);
    return seen;
  })();
  const bound = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`WatchOrder still open after 30 s; last status ${seen.at(-1)?.status}`)), 30_000).unref());
  return Promise.race([follow, bound]);
}

const stockOf = async (productId: string) => (await (await mesh.as(InventoryService, "inventory")).getStock({ productId })).stock!;
const paymentOf = async (orderId: string) =>
  (await (await mesh.as(PaymentService, "payment", ADA)).getPayment({ orderId }).catch((err) => ({ payment: undefined, err }))).payment;

/** Captures and refunds of one order on the bus: equal means it was never left charged. */
async function capturesAndRefunds(orderId: string) {
  const nc = await mesh.nats.connect();
  const jsm = await nc.jetstreamManager();
  const mine = (events: { data: { orderId: string } }[]) => events.filter((e) => e.data.orderId === orderId).length;
  const counts = { captured: mine(await storedEvents(jsm, PaymentCapturedSchema)), refunded: mine(await storedEvents(jsm, PaymentRefundedSchema)) };
  await nc.close();
  return counts;
}

describe("an order whose saga never completes", () => {
  it("is cancelled after the timeout when inventory is down; payment voids it, and inventory back up leaves the stock as it was", async () => {
    const pot = demoProducts[7]!;
    const before = await stockOf(pot.id);
    await stop("inventory");
    const order = await place(pot.id);

    // A watch with a deadline ends there while the order is still pending.
    const early: Order[] = [];
    const err = await rejection((async () => {
      for await (const update of orders.watchOrder({ id: order.id }, { timeoutMs: 500 })) early.push(update.order!);
    })());
    expect(err.code).toBe(Code.DeadlineExceeded);
    expect(early.map((o) => o.status)).toEqual([OrderStatus.PENDING]);

    const seen = await watchToEnd(order.id); // with no deadline it ends too: the order reaches a terminal state
    const final = seen.at(-1)!;
    expect(final.status).toBe(OrderStatus.CANCELLED);
    expect(final.cancelReason).toMatch(/timed out/);
    expect(Date.now() - Number(order.createTime!.seconds) * 1000).toBeGreaterThanOrEqual((TIMEOUT_SECONDS - 1) * 1000); // not before its time
    await restart("inventory"); // sees order.created and order.cancelled: reserves nothing for good
    await eventually(() => stockOf(pot.id), (s) => s.available === before.available && s.reserved === before.reserved, 15_000);
    expect((await orders.getOrder({ id: order.id })).order?.status).toBe(OrderStatus.CANCELLED);
    // Payment charges on stock.reserved. Inventory back up may still reserve the order before it
    // handles its cancellation (two consumers): payment then finds the payment voided. Nothing is charged.
    expect([undefined, PaymentStatus.VOIDED]).toContain((await paymentOf(order.id))?.status);
  }, 90_000);

  it("is cancelled after the timeout when payment is down; its reserved stock is released, and payment back up never leaves it charged", async () => {
    const blanket = demoProducts[8]!;
    const before = await stockOf(blanket.id);
    const paymentToken = await token();
    await stop("payment");
    const order = await place(blanket.id, paymentToken);
    await eventually(() => stockOf(blanket.id), (s) => s.reserved === before.reserved + 1, 15_000); // inventory reserved it

    const final = (await watchToEnd(order.id)).at(-1)!;
    expect(final.status).toBe(OrderStatus.CANCELLED);
    expect(final.cancelReason).toMatch(/timed out/);
    await eventually(() => stockOf(blanket.id), (s) => s.available === before.available && s.reserved === before.reserved, 15_000);

    await restart("payment"); // sees order.created, stock.reserved and order.cancelled in any order
    // Never charged: voided, refunded, or failed (the restarted payment has a fresh database here,
    // so it may no longer know the token when it records the order before seeing it cancelled).
    const never = [PaymentStatus.VOIDED, PaymentStatus.REFUNDED, PaymentStatus.FAILED];
    const payment = await eventually(() => paymentOf(order.id), (p) => never.includes(p?.status as PaymentStatus), 15_000);
    if (payment?.status === PaymentStatus.REFUNDED) {
      const counts = await eventually(() => capturesAndRefunds(order.id), (c) => c.refunded >= 1);
      expect(counts.captured).toBe(counts.refunded);
    }
    expect((await orders.getOrder({ id: order.id })).order?.status).toBe(OrderStatus.CANCELLED);
  }, 90_000);
});
