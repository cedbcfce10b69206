// Payment's part of the saga against real NATS and PGlite, with the test cards.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import type { JetStreamClient, JetStreamManager } from "nats";
import { v7 as uuidv7 } from "uuid";
import { StockReservedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { OrderCancelledSchema } from "../../gen/shop/order/v1/events_pb.js";
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
import { consumersIdle, publishTwice, storedEvents } from "../support/streams.js";

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
/**
 * stock.reserved as inventory publishes it for a new order of USER, carrying what payment needs:
 * the amount, the customer and the token of a payment method made for `card` (or a given token).
 */
const reservedEvent = async (orderId: string, card: string, token?: string) => ({
  orderId, lines: [], userId: USER, total: { amountMinor: 2500n, currencyCode: "EUR" }, paymentMethodToken: token ?? (await cardToken(gateway, card, asUser(USER))),
});
const reserved = async (orderId: string, card: string, token?: string) =>
  publishEvent(js, StockReservedSchema, await reservedEvent(orderId, card, token), { source: "inventory" });
const cancelled = (orderId: string) => publishEvent(js, OrderCancelledSchema, { orderId, reason: "customer cancelled" }, { source: "order" });
const status = async (orderId: string) => (await client.getPayment({ orderId }).catch(() => undefined))?.payment?.status;
const rowStatus = async (orderId: string) => (await under.svc.db.query<{ status: string }>("SELECT status FROM payments WHERE order_id = $1", [orderId]))[0]?.status;
/** Waits for the payment's status, and for the events of that change to be on the bus. */
const settled = async (orderId: string, want: PaymentStatus) => {
  await eventually(() => status(orderId), (s) => s === want);
  await eventually(() => under.svc.db.query("SELECT 1 FROM outbox WHERE published_at IS NULL"), (rows) => rows.length === 0);
};
const count = async (schema: typeof PaymentCapturedSchema | typeof PaymentFailedSchema | typeof PaymentRefundedSchema, orderId: string) =>
  (await storedEvents(jsm, schema)).filter((e) => e.data.orderId === orderId).length;

describe("payment", () => {
  it("captures with the success card once stock is reserved, from that one event", async () => {
    const orderId = uuidv7();
    await reserved(orderId, testCards.success);
    await settled(orderId, PaymentStatus.CAPTURED);
    const [captured] = (await storedEvents(jsm, PaymentCapturedSchema)).filter((e) => e.data.orderId === orderId);
    expect(captured!.data).toMatchObject({ cardLast4: "4242", amount: { amountMinor: 2500n, currencyCode: "EUR" } });
  });

  it("fails with the declined card and says why", async () => {
    const orderId = uuidv7();
    await reserved(orderId, testCards.declined);
    await settled(orderId, PaymentStatus.FAILED);
    const [failed] = (await storedEvents(jsm, PaymentFailedSchema)).filter((e) => e.data.orderId === orderId);
    expect(failed!.data.declineCode).toBe("card_declined");
    expect(await count(PaymentCapturedSchema, orderId)).toBe(0);
  });

  it("retries a transient processing error and then captures", async () => {
    const orderId = uuidv7();
    await reserved(orderId, testCards.processingError);
    await settled(orderId, PaymentStatus.CAPTURED);
    expect(await count(PaymentCapturedSchema, orderId)).toBe(1);
  });

  it("charges nothing for a stock.reserved without the order's amount (from an older inventory); the order's cancellation voids it", async () => {
    const orderId = uuidv7();
    await publishEvent(js, StockReservedSchema, { orderId, lines: [] }, { source: "inventory" });
    await eventually(() => consumersIdle(jsm, ["SHOP_INVENTORY", "payment-charge"]), Boolean);
    expect(await rowStatus(orderId)).toBeUndefined();
    await cancelled(orderId);
    await eventually(() => rowStatus(orderId), (s) => s === "voided");
    expect(await count(PaymentCapturedSchema, orderId)).toBe(0);
  });

  it("captures at most once when stock.reserved is delivered twice", async () => {
    const orderId = uuidv7();
    await publishTwice(js, encodeEvent(StockReservedSchema, await reservedEvent(orderId, testCards.success), { source: "inventory" }));
    await settled(orderId, PaymentStatus.CAPTURED);
    await sleep(400);
    expect(await count(PaymentCapturedSchema, orderId)).toBe(1);
  });

  it("refunds a captured payment when the order is cancelled, and never charges an order cancelled first", async () => {
    const paid = uuidv7();
    await reserved(paid, testCards.success);
    await settled(paid, PaymentStatus.CAPTURED);
    await cancelled(paid);
    await settled(paid, PaymentStatus.REFUNDED);
    expect(await count(PaymentRefundedSchema, paid)).toBe(1);

    const unpaid = uuidv7();
    await cancelled(unpaid);
    await eventually(() => rowStatus(unpaid), (s) => s === "voided");
    const event = await reservedEvent(unpaid, testCards.success);
    await publishEvent(js, StockReservedSchema, event, { source: "inventory" }); // too late: nothing is charged
    await settled(unpaid, PaymentStatus.VOIDED); // its owner is known now, so it shows
    await sleep(400);
    expect(await status(unpaid)).toBe(PaymentStatus.VOIDED);
    expect(await count(PaymentCapturedSchema, unpaid) + (await count(PaymentRefundedSchema, unpaid))).toBe(0);
    // Its token was not spent on it: unused, it expires and is purged, card and all.
    expect(await under.svc.db.query("SELECT order_id FROM payment_methods WHERE token = $1", [event.paymentMethodToken])).toEqual([{ order_id: null }]);
  });

  it("shows a payment to its owner and admins only", async () => {
    const orderId = uuidv7();
    await reserved(orderId, testCards.success);
    await settled(orderId, PaymentStatus.CAPTURED);
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
    await reserved(unknown, "", `pm_${"x".repeat(32)}`);
    expect(await declineOf(unknown)).toMatchObject({ declineCode: "payment_method_unusable", reason: expect.stringMatching(/unknown/) });

    const theirs = uuidv7();
    await reserved(theirs, "", await cardToken(gateway, testCards.success, asUser(uuidv7())));
    expect((await declineOf(theirs)).declineCode).toBe("payment_method_unusable");

    const token = await cardToken(gateway, testCards.success, asUser(USER));
    const [first, second] = [uuidv7(), uuidv7()];
    await reserved(first, "", token);
    await settled(first, PaymentStatus.CAPTURED);
    await reserved(second, "", token);
    expect(await declineOf(second)).toMatchObject({ declineCode: "payment_method_unusable", reason: expect.stringMatching(/already used/) });
    expect(await status(first)).toBe(PaymentStatus.CAPTURED); // the first order keeps its charge
    expect(await count(PaymentCapturedSchema, second)).toBe(0);

    const stale = await cardToken(gateway, testCards.success, asUser(USER));
    await under.svc.db.query("UPDATE payment_methods SET expires_at = now() - interval '1 second' WHERE token = $1", [stale]);
    const late = uuidv7();
    await reserved(late, "", stale);
    expect((await declineOf(late)).declineCode).toBe("payment_method_unusable");
    // Expired and unused: purged by the sweep, card and all.
    await eventually(() => under.svc.db.query("SELECT 1 FROM payment_methods WHERE token = $1", [stale]), (rows) => rows.length === 0);
  });
});
