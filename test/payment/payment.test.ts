// Payment's part of the saga against real NATS and PGlite, with the test cards.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import type { JetStreamClient, JetStreamManager } from "nats";
import { v7 as uuidv7 } from "uuid";
import { StockReservedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { OrderCancelledSchema, OrderCreatedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { PaymentCapturedSchema, PaymentFailedSchema, PaymentRefundedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { PaymentService, PaymentStatus } from "../../gen/shop/payment/v1/payment_pb.js";
import { headers } from "../../mesh/call-scope.js";
import type { MeshClient } from "../../mesh/client.js";
import { encodeEvent, publishEvent } from "../../mesh/events.js";
import { testCards } from "../../services/payment/processor.js";
import { payment } from "../../services/payment/payment.js";
import { eventually } from "../support/eventually.js";
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
const created = (orderId: string, card: string, amount = 2500) =>
  publishEvent(js, OrderCreatedSchema, { orderId, userId: USER, total: { amountMinor: BigInt(amount), currencyCode: "EUR" }, paymentMethod: { cardNumber: card } }, { source: "order" });
const reserved = (orderId: string) => publishEvent(js, StockReservedSchema, { orderId, lines: [] }, { source: "inventory" });
const status = async (orderId: string) => (await client.getPayment({ orderId }).catch(() => undefined))?.payment?.status;
const settled = (orderId: string, want: PaymentStatus) => eventually(() => status(orderId), (s) => s === want);
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
    const as = (id: string, roles = "customer") => ({ headers: { [headers.userId]: id, [headers.userRoles]: roles } });
    expect((await gateway.getPayment({ orderId }, as(USER))).payment?.cardLast4).toBe("4242");
    expect((await rejection(gateway.getPayment({ orderId }, as(uuidv7())))).code).toBe(Code.NotFound);
    expect((await gateway.getPayment({ orderId }, as(uuidv7(), "customer,admin"))).payment?.orderId).toBe(orderId);
    expect((await rejection(gateway.getPayment({ orderId }))).code).toBe(Code.Unauthenticated);
  });
});
