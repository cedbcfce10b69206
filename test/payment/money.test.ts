// Payment's money guarantees under every interleaving of stock.reserved (which makes a payment
// ready: it carries the order's amount and payment method) and order.cancelled, with a real
// payment service on real NATS, on PGlite and on a real PostgreSQL server (PGlite runs one
// statement at a time and can hide races that PostgreSQL lets happen):
// - the processor is asked at most once per payment, even when its charge starts twice at once;
// - a cancelled order ends with nothing captured, or captured and refunded; never PENDING;
// - no card number stays in payment's database once the payment is decided.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { JetStreamClient, JetStreamManager } from "nats";
import { v7 as uuidv7 } from "uuid";
import { StockReservedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { OrderCancelledSchema } from "../../gen/shop/order/v1/events_pb.js";
import { PaymentCapturedSchema, PaymentRefundedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { publishEvent } from "../../mesh/events/events.js";
import { payment } from "../../services/payment/payment.js";
import { testCards, testProcessor } from "../../services/payment/processor.js";
import { eventually } from "../support/eventually.js";
import { asUser, cardToken } from "../support/payments.js";
import { startPostgres, type TestPostgres } from "../support/postgres.js";
import { startTestService, startWithNats, type ServiceWithNats } from "../support/service.js";
import { consumersIdle, storedEvents } from "../support/streams.js";

const USER = "018f0000-0000-7000-8000-0000000000c1";

interface PaymentRow extends Record<string, unknown> {
  id: string;
  order_id: string;
  status: string;
}

describe.each(["pglite", "postgres"] as const)("payment money on %s", (kind) => {
  let pg: TestPostgres | undefined;
  let dataDir: string | undefined;
  let under: ServiceWithNats<typeof PaymentService>;
  let js: JetStreamClient;
  let jsm: JetStreamManager;
  let payments: MeshClient<typeof PaymentService>;

  beforeAll(async () => {
    const env: Record<string, string> = {};
    if (kind === "postgres") {
      pg = await startPostgres();
      await pg.createDatabase("payment");
      env.DATABASE_URL = pg.url("payment");
    } else {
      dataDir = mkdtempSync(join(tmpdir(), "shopmesh-payment-"));
      env.DATA_DIR = dataDir; // on disk, so a restarted service finds its payments
    }
    env.CHARGE_LEASE_MS = "300"; // a crashed charge is taken over quickly
    under = await startWithNats(payment, env);
    ({ js, jsm, gateway: payments } = under);
    restart = async () => {
      await under.svc.stop();
      await publishWhileDown();
      // The same object, now the new instance: the fixture's stop() stops this one.
      Object.assign(under.svc, await startTestService(payment, under.nats.pki, { NATS_URL: under.nats.url, ...env }));
      await under.svc.eventing.ready;
      payments = await under.svc.client("gateway"); // on the new port
    };
  }, 60_000);
  afterAll(async () => {
    if (payments !== under?.gateway) payments?.close();
    await under?.stop();
    await pg?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });
  let restart: () => Promise<void>;
  let publishWhileDown: () => Promise<unknown> = async () => {};

  // Each order is paid with its own payment method, made beforehand (while payment is up).
  const tokens = new Map<string, string>();
  const newOrders = async (n: number) => {
    const orderIds = Array.from({ length: n }, () => uuidv7());
    await Promise.all(orderIds.map(async (orderId) => tokens.set(orderId, await cardToken(payments, testCards.success, asUser(USER)))));
    return orderIds;
  };
  /** stock.reserved as inventory publishes it: with the order's amount, customer and payment method. */
  const reserved = (orderId: string, id?: string) =>
    publishEvent(js, StockReservedSchema, { orderId, lines: [], userId: USER, total: { amountMinor: 1999n, currencyCode: "EUR" }, paymentMethodToken: tokens.get(orderId) }, { source: "inventory", id });
  const cancelled = (orderId: string) => publishEvent(js, OrderCancelledSchema, { orderId, userId: USER, reason: "changed my mind" }, { source: "order" });

  const paymentsOf = (orderIds: string[]) => under.svc.db.query<PaymentRow>("SELECT id, order_id, status FROM payments WHERE order_id = ANY($1)", [orderIds]);

  /** Waits until payment has handled every event published so far, has no charge in flight and has published what it enqueued. */
  const quiet = () =>
    eventually(
      async () =>
        (await consumersIdle(jsm, ["SHOP_ORDER", "payment-refund"], ["SHOP_INVENTORY", "payment-charge"])) &&
        (await under.svc.db.query("SELECT 1 FROM payments WHERE status = 'charging'")).length === 0 &&
        (await under.svc.db.query("SELECT 1 FROM outbox WHERE published_at IS NULL")).length === 0,
      Boolean,
      60_000,
    );

  /** Every order cancelled: nothing captured without its refund, nothing pending, no card kept. */
  async function expectCancelledEverywhere(orderIds: string[], maxProcessorCalls = 1) {
    await quiet();
    const rows = await paymentsOf(orderIds);
    const [captures, refunds] = await Promise.all([storedEvents(jsm, PaymentCapturedSchema), storedEvents(jsm, PaymentRefundedSchema)]);
    const countFor = (events: { data: { orderId: string } }[], orderId: string) => events.filter((e) => e.data.orderId === orderId).length;
    const wrong = orderIds.flatMap((orderId) => {
      const row = rows.find((r) => r.order_id === orderId);
      const problems = [
        !row && "no payment row",
        row && !["voided", "refunded", "failed"].includes(row.status) && `status ${row.status}`,
        row && testProcessor.captures(row.id) !== (row.status === "refunded" ? 1 : 0) && `processor captured ${testProcessor.captures(row.id)} for a ${row.status} payment`,
        row && testProcessor.calls(row.id) > maxProcessorCalls && `processor asked ${testProcessor.calls(row.id)} times`,
        countFor(captures, orderId) !== countFor(refunds, orderId) && `${countFor(captures, orderId)} captured, ${countFor(refunds, orderId)} refunded`,
      ].filter(Boolean);
      return problems.length ? [`${orderId}: ${problems.join(", ")}`] : [];
    });
    expect(wrong).toEqual([]);
    expect(await cardsKept(orderIds)).toBe(0);
  }

  const cardsKept = async (orderIds: string[]) =>
    (await under.svc.db.query("SELECT 1 FROM payment_methods WHERE order_id = ANY($1) AND card_number IS NOT NULL", [orderIds])).length;

  // Each order's two events in one of the two possible orders, every order at once.
  const orderings = [
    [reserved, cancelled],
    [cancelled, reserved],
  ];
  const publishInEveryOrder = (orderIds: string[]) =>
    Promise.all(orderIds.map(async (orderId, i) => {
      for (const publish of orderings[i % orderings.length]!) await publish(orderId);
    }));

  it("asks the processor at most once per payment when its charge starts twice at once (two deliveries racing)", async () => {
    const orderIds = await newOrders(40);
    // Two events for one order (as a republish after the stream's duplicate window would be):
    // both are applied or skipped by the inbox, and both start the charge right after.
    await Promise.all(orderIds.map((orderId) => Promise.all([reserved(orderId), reserved(orderId)])));
    const rows = await eventually(() => paymentsOf(orderIds), (r) => r.length === orderIds.length && r.every((p) => p.status === "captured"), 60_000);
    expect(rows.filter((r) => testProcessor.calls(r.id) !== 1).map((r) => `${r.order_id}: ${testProcessor.calls(r.id)} calls`)).toEqual([]);
    await quiet();
    expect(await cardsKept(orderIds)).toBe(0);
  }, 90_000);

  it("loses no cancellation when the events of cancelled orders race each other in a running payment service", async () => {
    const orderIds = await newOrders(kind === "postgres" ? 150 : 72);
    await publishInEveryOrder(orderIds);
    await expectCancelledEverywhere(orderIds);
  }, 120_000);

  it("loses no cancellation when orders are created and cancelled while payment is down, then payment starts", async () => {
    const orderIds = await newOrders(kind === "postgres" ? 150 : 72);
    publishWhileDown = () => publishInEveryOrder(orderIds);
    await restart(); // every consumer now finds both events of every order waiting
    await expectCancelledEverywhere(orderIds);
  }, 120_000);

  /**
   * Leaves an order's payment as a process that died right after the processor charged it would:
   * recorded from stock.reserved with its token bound, claimed (charging, lease running), charged
   * by the processor, the answer lost.
   */
  async function crashAfterCharging() {
    const orderId = (await newOrders(1))[0]!;
    const id = uuidv7();
    await under.svc.db.tx(async (q) => {
      await q.query("UPDATE payment_methods SET order_id = $1 WHERE token = $2", [orderId, tokens.get(orderId)]);
      await q.query(
        `INSERT INTO payments (id, order_id, user_id, amount_minor, currency, card_last4, status, stock_reserved, attempts, lease_until)
         VALUES ($1, $2, $3, 1999, 'EUR', '4242', 'charging', true, 1, now() + interval '300 milliseconds')`,
        [id, orderId, USER],
      );
    });
    await testProcessor.charge({ idempotencyKey: id, card: testCards.success, amountMinor: 1999n, currency: "EUR" });
    return { orderId, id };
  }

  it("finishes a charge whose process died after the processor charged: asked again with the same key, charged once", async () => {
    const { orderId, id } = await crashAfterCharging();
    await eventually(() => paymentsOf([orderId]), (r) => r[0]?.status === "captured", 10_000);
    expect(testProcessor.captures(id)).toBe(1);
    expect(testProcessor.calls(id)).toBe(2);
    await quiet();
    expect((await storedEvents(jsm, PaymentCapturedSchema)).filter((e) => e.data.orderId === orderId)).toHaveLength(1);
  });

  it("refunds a charge that was in flight when its order was cancelled, once its outcome is known", async () => {
    const { orderId } = await crashAfterCharging();
    await cancelled(orderId);
    await expectCancelledEverywhere([orderId], 2); // the lost answer is asked for again
  });
});
