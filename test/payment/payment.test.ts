// Payment's part of the saga against real NATS and PGlite, with the test cards.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import type { JetStreamClient, JetStreamManager } from "nats";
import { v7 as uuidv7 } from "uuid";
import { StockReservedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { OrderCancelledSchema, OrderCreatedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { PaymentCapturedSchema, PaymentFailedSchema, PaymentRefundedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { PaymentService, PaymentStatus } from "../../gen/shop/payment/v1/payment_pb.js";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { encodeEvent, publishEvent } from "../../mesh/events/events.js";
import { testCards } from "../../services/payment/processor.js";
import { payment } from "../../services/payment/payment.js";
import { eventually } from "../support/eventually.js";
import { asUser, cardToken } from "../support/payments.js";
import { rejection, sleep } from "../support/servers.js";
import { startWithNats, type ServiceWithNats } from "../support/service.js";
import { publishTwice, storedEvents } from "../support/streams.js";

let under: ServiceWithNats<typeof PaymentService>;
let js: JetStreamClient;
let jsm: JetStreamManager;
let client: MeshClient<typeof PaymentService>;
let gateway: MeshClient<typeof PaymentService>;

beforeAll(async () => {
  under = await startWithNats(payment, {});
  ({ js, jsm, client, gateway } = under);
});
afterAll(() => under?.stop());

const USER = "018f0000-0000-7000-8000-0000000000b1";
/** order.created for a new order paid with `card` (by the token of a payment method made for it) or with a given token. */
const created = async (orderId: string, card: string, token?: string) =>
  publishEvent(js, OrderCreatedSchema, {
    orderId, userId: USER, total: { amountMinor: 2500n, currencyCode: "EUR" }, paymentMethod: { token: token ?? (await cardToken(gateway, card, asUser(USER))) },
  }, { source: "order" });
const reserved = (orderId: string) => publishEvent(js, StockReservedSchema, { orderId, lines: [] }, { source: "inventory" });
const status = async (orderId: string) => (await client.getPayment({ orderId }).catch(() => undefined))?.payment?.status;
/** Waits for the payment's status, and for the events of that change to be on the bus. */
const settled = async (orderId: string, want: PaymentStatus) => {
  await eventually(() => status(orderId), (s) => s === want);
  await eventually(() => under.svc.db.query("SELECT 1 FROM outbox WHERE published_at IS NULL"), (rows) => rows.length === 0);
};
const count = async (schema: typeof PaymentCapturedSchema | typeof PaymentFailedSchema | typeof PaymentRefundedSchema, orderId: string) =>
  (await storedEvents(jsm, schema)).filter((e) => e.data.orderId === orderId).length;

describe("payment", () => {
  it("captures with the success card once stock is reserved", async () => {
    const orderId = uuidv7();
    await created(orderId, testCards.success);
    await settled(orderId, PaymentStatus.PENDING);
    await reserved(orderId);
    await settled(orderId, PaymentStatus.CAPTURED);
    const [captured] = (await storedEvents(jsm, PaymentCapturedSchema)).filter((e) => e.data.orderId === orderId);
    expect(captured!.data).toMatchObject({ cardLast4: "4242", amount: { amountMinor: 2500n, currencyCode: "EUR" } });
  });

  it("fails with the declined card and says why", async () => {
    const orderId = uuidv7();
    await created(orderId, testCards.declined);
    await reserved(orderId);
    await settled(orderId, PaymentStatus.FAILED);
    const [failed] = (await storedEvents(jsm, PaymentFailedSchema)).filter((e) => e.data.orderId === orderId);
    expect(failed!.data.declineCode).toBe("card_declined");
    expect(await count(PaymentCapturedSchema, orderId)).toBe(0);
  });

  it("retries a transient processing error and then captures", async () => {
    const orderId = uuidv7();
    await created(orderId, testCards.processingError);
    await reserved(orderId);
    await settled(orderId, PaymentStatus.CAPTURED);
    expect(await count(PaymentCapturedSchema, orderId)).toBe(1);
  });

  it("waits for order.created when stock.reserved arrives first", async () => {
    const orderId = uuidv7();
    await reserved(orderId);
    await sleep(150);
    await created(orderId, testCards.success);
    await settled(orderId, PaymentStatus.CAPTURED);
  });

  it("captures at most once when stock.reserved is delivered twice", async () => {
    const orderId = uuidv7();
    await created(orderId, testCards.success);
    await settled(orderId, PaymentStatus.PENDING);
    await publishTwice(js, encodeEvent(StockReservedSchema, { orderId }, { source: "inventory" }));
    await settled(orderId, PaymentStatus.CAPTURED);
    await sleep(400);
    expect(await count(PaymentCapturedSchema, orderId)).toBe(1);
  });

  it("refunds a captured payment when the order is cancelled, and never refunds what was not captured", async () => {
    const paid = uuidv7();
    await created(paid, testCards.success);
    await reserved(paid);
    await settled(paid, PaymentStatus.CAPTURED);
    await publishEvent(js, OrderCancelledSchema, { orderId: paid, reason: "customer cancelled" }, { source: "order" });
    await settled(paid, PaymentStatus.REFUNDED);
    expect(await count(PaymentRefundedSchema, paid)).toBe(1);

    const unpaid = uuidv7();
    await created(unpaid, testCards.success);
    await settled(unpaid, PaymentStatus.PENDING);
    await publishEvent(js, OrderCancelledSchema, { orderId: unpaid, reason: "customer cancelled" }, { source: "order" });
    await settled(unpaid, PaymentStatus.VOIDED);
    await reserved(unpaid); // too late: nothing is charged
    await sleep(400);
    expect(await status(unpaid)).toBe(PaymentStatus.VOIDED);
    expect(await count(PaymentCapturedSchema, unpaid) + (await count(PaymentRefundedSchema, unpaid))).toBe(0);
  });

  it("shows a payment to its owner and admins only", async () => {
    const orderId = uuidv7();
    await created(orderId, testCards.success);
    await settled(orderId, PaymentStatus.PENDING);
    expect((await gateway.getPayment({ orderId }, asUser(USER))).payment?.cardLast4).toBe("4242");
    expect((await rejection(gateway.getPayment({ orderId }, asUser(uuidv7())))).code).toBe(Code.NotFound);
    expect((await gateway.getPayment({ orderId }, asUser(uuidv7(), "customer,admin"))).payment?.orderId).toBe(orderId);
    expect((await rejection(gateway.getPayment({ orderId }))).code).toBe(Code.Unauthenticated);
  });

  it("creates payment methods only for signed-in users, and checks the card number", async () => {
    const method = (await gateway.createPaymentMethod({ cardNumber: testCards.success }, asUser(USER))).paymentMethod!;
    expect(method.token).toMatch(/^pm_[A-Za-z0-9_-]{32}$/);
    expect(method.cardLast4).toBe("4242");
    const minutes = (Number(method.expireTime!.seconds) * 1000 - Date.now()) / 60_000;
    expect(minutes).toBeGreaterThan(14);
    expect(minutes).toBeLessThanOrEqual(15);
    expect(JSON.stringify(method, (_, v) => (typeof v === "bigint" ? String(v) : v))).not.toContain(testCards.success);
    expect((await rejection(gateway.createPaymentMethod({ cardNumber: testCards.success }))).code).toBe(Code.Unauthenticated);
    expect((await rejection(client.createPaymentMethod({ cardNumber: testCards.success }))).code).toBe(Code.Unauthenticated); // a service is no customer
    for (const cardNumber of ["", "4242", "4242 4242 4242 4242", "42424242424242424242"]) {
      const err = await rejection(gateway.createPaymentMethod({ cardNumber }, asUser(USER)));
      expect(err.code).toBe(Code.InvalidArgument);
      expect(err.message).toContain("card_number");
      expect(err.message).not.toContain(cardNumber || "§"); // the number is not echoed back
    }
  });

  it("fails the payment of an order whose token is unknown, another customer's, expired or already used", async () => {
    const declineOf = async (orderId: string) => {
      await settled(orderId, PaymentStatus.FAILED);
      return (await storedEvents(jsm, PaymentFailedSchema)).find((e) => e.data.orderId === orderId)!.data;
    };
    const unknown = uuidv7();
    await created(unknown, "", `pm_${"x".repeat(32)}`);
    expect(await declineOf(unknown)).toMatchObject({ declineCode: "payment_method_unusable", reason: expect.stringMatching(/unknown/) });

    const theirs = uuidv7();
    await created(theirs, "", await cardToken(gateway, testCards.success, asUser(uuidv7())));
    expect((await declineOf(theirs)).declineCode).toBe("payment_method_unusable");

    const token = await cardToken(gateway, testCards.success, asUser(USER));
    const [first, second] = [uuidv7(), uuidv7()];
    await created(first, "", token);
    await settled(first, PaymentStatus.PENDING);
    await created(second, "", token);
    expect(await declineOf(second)).toMatchObject({ declineCode: "payment_method_unusable", reason: expect.stringMatching(/already used/) });
    await reserved(first);
    await settled(first, PaymentStatus.CAPTURED); // the first order keeps its card
    expect(await count(PaymentCapturedSchema, second)).toBe(0);

    const stale = await cardToken(gateway, testCards.success, asUser(USER));
    await under.svc.db.query("UPDATE payment_methods SET expires_at = now() - interval '1 second' WHERE token = $1", [stale]);
    const late = uuidv7();
    await created(late, "", stale);
    expect((await declineOf(late)).declineCode).toBe("payment_method_unusable");
    // Expired and unused: purged by the sweep, card and all.
    await eventually(() => under.svc.db.query("SELECT 1 FROM payment_methods WHERE token = $1", [stale]), (rows) => rows.length === 0);
  });
});
