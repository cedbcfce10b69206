// The order saga across all six services, with real NATS, Redis and databases: every order ends
// CONFIRMED or CANCELLED, stock and payments end where they should, and the user is told.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { InventoryService } from "../../gen/shop/inventory/v1/inventory_pb.js";
import { NotificationService } from "../../gen/shop/notification/v1/notification_pb.js";
import { OrderService, OrderStatus, type Order } from "../../gen/shop/order/v1/order_pb.js";
import { PaymentService, PaymentStatus } from "../../gen/shop/payment/v1/payment_pb.js";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { demoProducts } from "../../services/catalog/demo.js";
import { testCards } from "../../services/payment/processor.js";
import { PaymentCapturedSchema, PaymentRefundedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { eventually } from "../support/eventually.js";
import { cardToken } from "../support/payments.js";
import { storedEvents } from "../support/streams.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { rejection } from "../support/servers.js";

let mesh: TestMesh;
const ADA = uuidv7();
let orders: MeshClient<typeof OrderService>;
let payments: MeshClient<typeof PaymentService>;

beforeAll(async () => {
  mesh = await startMesh();
  orders = await mesh.as(OrderService, "order", ADA);
  payments = await mesh.as(PaymentService, "payment", ADA); // one connection: 50 orders at once need not make 50 TLS handshakes
}, 120_000);
afterAll(() => mesh?.stop());

const address = { recipientName: "Ada Lovelace", addressLines: ["12 St James's Square"], city: "London", postalCode: "SW1Y 4JH", countryCode: "GB" };
/** Pays as a customer does: the card goes to payment, the order gets its token. */
const token = (card: string) => cardToken(payments, card);
const place = async (lines: [string, number][], card: string = testCards.success, client = orders, idempotencyKey = "", paymentToken?: string) =>
  client.createOrder({ lines: lines.map(([productId, quantity]) => ({ productId, quantity })), shippingAddress: address, paymentMethod: { token: paymentToken ?? (await token(card)) }, idempotencyKey });

/** Follows WatchOrder until the order is terminal; returns every status seen. */
async function watch(id: string, client = orders): Promise<Order[]> {
  const seen: Order[] = [];
  for await (const update of client.watchOrder({ id }, { timeoutMs: 20_000 })) seen.push(update.order!);
  return seen;
}
const stockOf = async (productId: string) => (await (await mesh.as(InventoryService, "inventory")).getStock({ productId })).stock!;

describe("order saga", () => {
  it("takes an order from CreateOrder to CONFIRMED, priced by the catalog, and tells the customer", async () => {
    const mug = demoProducts[0]!;
    const before = await stockOf(mug.id);
    const { order } = await place([[mug.id, 2]]);
    expect(order).toMatchObject({ status: OrderStatus.PENDING, userId: ADA, total: { amountMinor: mug.priceMinor * 2n, currencyCode: "EUR" } });
    expect(order!.lines[0]).toMatchObject({ productName: mug.name, quantity: 2, unitPrice: { amountMinor: mug.priceMinor } });

    const seen = await watch(order!.id);
    expect(seen.at(-1)!.status).toBe(OrderStatus.CONFIRMED);
    expect(seen.slice(0, -1).every((o) => o.status === OrderStatus.PENDING)).toBe(true); // PENDING until it ends
    // Inventory turns the reservation into a sale when it handles order.confirmed, just after.
    await eventually(() => stockOf(mug.id), (s) => s.reserved === before.reserved);
    expect(await stockOf(mug.id)).toMatchObject({ available: before.available - 2, reserved: before.reserved });
    const payment = await (await mesh.as(PaymentService, "payment", ADA)).getPayment({ orderId: order!.id });
    expect(payment.payment?.status).toBe(PaymentStatus.CAPTURED);
    const notifications = await mesh.as(NotificationService, "notification", ADA);
    const note = await eventually(async () => (await notifications.listNotifications({})).notifications.find((n) => n.subject.includes(order!.id)), Boolean);
    expect(note?.subject).toBe(`Order ${order!.id} confirmed`);
  });

  it("cancels an order paid with a declined card, restores its stock and charges nothing", async () => {
    const knife = demoProducts[1]!;
    const before = await stockOf(knife.id);
    const { order } = await place([[knife.id, 1]], testCards.declined);
    const final = (await watch(order!.id)).at(-1)!;
    expect(final.status).toBe(OrderStatus.CANCELLED);
    expect(final.cancelReason).toMatch(/payment failed: the card was declined/);
    await eventually(() => stockOf(knife.id), (s) => s.available === before.available && s.reserved === before.reserved);
    expect((await (await mesh.as(PaymentService, "payment", ADA)).getPayment({ orderId: order!.id })).payment?.status).toBe(PaymentStatus.FAILED);
    const note = await eventually(
      async () => (await (await mesh.as(NotificationService, "notification", ADA)).listNotifications({})).notifications.find((n) => n.subject === `Order ${order!.id} cancelled`),
      Boolean,
    );
    expect(note?.body).toMatch(/declined/);
  });

  it("confirms exactly 10 of 50 concurrent orders competing for a stock of 10", async () => {
    const adminId = uuidv7();
    const admin = await mesh.as(CatalogService, "catalog", adminId, "customer,admin");
    const { product } = await admin.createProduct({ sku: `RARE-${Date.now()}`, name: "Rare thing", category: "home", price: { amountMinor: 999n, currencyCode: "EUR" } });
    await (await mesh.as(InventoryService, "inventory", adminId, "customer,admin")).adjustStock({ productId: product!.id, delta: 10, reason: "limited edition" });
    const placed = await Promise.all(Array.from({ length: 50 }, () => place([[product!.id, 1]])));
    const finals = await Promise.all(placed.map(({ order }) => watch(order!.id).then((s) => s.at(-1)!)));
    expect(finals.filter((o) => o.status === OrderStatus.CONFIRMED)).toHaveLength(10);
    expect(finals.filter((o) => o.status === OrderStatus.CANCELLED)).toHaveLength(40);
    expect(finals.filter((o) => o.status === OrderStatus.CANCELLED).every((o) => o.cancelReason === "out of stock")).toBe(true);
    await eventually(() => stockOf(product!.id), (s) => s.reserved === 0);
    expect(await stockOf(product!.id)).toMatchObject({ available: 0, reserved: 0 });
  }, 60_000);

  it("answers a retried CreateOrder with the same order, and refuses the key for another body", async () => {
    const lamp = demoProducts[6]!.id;
    const key = `checkout-${uuidv7()}`;
    const paymentToken = await token(testCards.success);
    const first = await place([[lamp, 1]], testCards.success, orders, key, paymentToken);
    const again = await place([[lamp, 1]], testCards.success, orders, key, paymentToken); // a retry sends the same request
    expect(again.order?.id).toBe(first.order?.id);
    const other = await rejection(place([[lamp, 2]], testCards.success, orders, key, paymentToken));
    expect(other.code).toBe(Code.FailedPrecondition);
    await watch(first.order!.id);
  });

  it("shows customers only their own orders, and never cancels a confirmed one", async () => {
    const { order } = await place([[demoProducts[3]!.id, 1]]);
    await watch(order!.id);
    const bob = await mesh.as(OrderService, "order", uuidv7());
    expect((await rejection(bob.getOrder({ id: order!.id }))).code).toBe(Code.NotFound);
    expect((await bob.listOrders({})).orders).toEqual([]);
    expect((await orders.listOrders({})).orders.some((o) => o.id === order!.id)).toBe(true);
    expect((await rejection(orders.cancelOrder({ id: order!.id }))).code).toBe(Code.FailedPrecondition);
  });

  it("loses nothing when NATS stops and restarts mid-flow: every order ends, stock adds up", async () => {
    const tent = demoProducts[10]!;
    const before = await stockOf(tent.id);
    const placed = [];
    for (let i = 0; i < 4; i++) placed.push((await place([[tent.id, 1]])).order!);
    await mesh.nats.stop({ keepData: true }); // events now wait in the outboxes
    for (let i = 0; i < 4; i++) placed.push((await place([[tent.id, 1]], i % 2 ? testCards.declined : testCards.success)).order!);
    await new Promise((r) => setTimeout(r, 1_000));
    await mesh.nats.restart();
    const finals = await Promise.all(placed.map((o) => watch(o.id).then((s) => s.at(-1)!)));
    expect(finals.every((o) => o.status === OrderStatus.CONFIRMED || o.status === OrderStatus.CANCELLED)).toBe(true);
    const confirmed = finals.filter((o) => o.status === OrderStatus.CONFIRMED).length;
    expect(confirmed).toBe(6); // the two declined cards cancel
    await eventually(() => stockOf(tent.id), (s) => s.reserved === before.reserved && s.available === before.available - confirmed, 10_000);
  }, 60_000);

  it("cancels a pending order and compensates whatever of the saga had already happened", async () => {
    const socks = demoProducts[5]!;
    const before = await stockOf(socks.id);
    await mesh.nats.stop({ keepData: true }); // hold the saga so the order is surely still PENDING
    const { order } = await place([[socks.id, 3]]);
    const { order: cancelled } = await orders.cancelOrder({ id: order!.id, reason: "changed my mind" });
    expect(cancelled?.status).toBe(OrderStatus.CANCELLED);
    await mesh.nats.restart(); // order.created and order.cancelled now race through every consumer
    await eventually(() => stockOf(socks.id), (s) => s.available === before.available && s.reserved === before.reserved, 15_000);
    await new Promise((r) => setTimeout(r, 1_500)); // let every consumer finish with both events
    const payment = await (await mesh.as(PaymentService, "payment", ADA)).getPayment({ orderId: order!.id }).catch(() => undefined);
    // Voided, refunded, or never recorded (cancellation seen first): never left charged.
    expect([PaymentStatus.VOIDED, PaymentStatus.REFUNDED, undefined]).toContain(payment?.payment?.status);
    const nc = await mesh.nats.connect();
    const jsm = await nc.jetstreamManager();
    const mine = (events: { data: { orderId: string } }[]) => events.filter((e) => e.data.orderId === order!.id).length;
    expect(mine(await storedEvents(jsm, PaymentCapturedSchema))).toBe(mine(await storedEvents(jsm, PaymentRefundedSchema)));
    await nc.close();
    expect((await orders.getOrder({ id: order!.id })).order?.status).toBe(OrderStatus.CANCELLED);
  }, 60_000);

  it("names unknown products, and takes orders only from signed-in users", async () => {
    const err = await rejection(place([[uuidv7(), 1]]));
    expect(err.code).toBe(Code.NotFound);
    const anonymous = await mesh.as(OrderService, "order");
    expect((await rejection(place([[demoProducts[0]!.id, 1]], testCards.success, anonymous))).code).toBe(Code.Unauthenticated);
  });
});
