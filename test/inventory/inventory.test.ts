// Inventory's part of the saga against real NATS and PGlite: all-or-nothing reservations that
// never take stock below zero, releases and commits, each event having one effect.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import type { JetStreamClient, JetStreamManager } from "nats";
import { v7 as uuidv7 } from "uuid";
import { InventoryService } from "../../gen/shop/inventory/v1/inventory_pb.js";
import { StockRejectedSchema, StockReleasedSchema, StockReservedSchema } from "../../gen/shop/inventory/v1/events_pb.js";
import { OrderCancelledSchema, OrderConfirmedSchema, OrderCreatedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { PaymentFailedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { headers } from "../../mesh/rpc/call-scope.js";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { encodeEvent, publishEvent } from "../../mesh/events/events.js";
import { inventory } from "../../services/inventory/inventory.js";
import { eventually } from "../support/eventually.js";
import { rejection, sleep } from "../support/servers.js";
import { startWithNats, type ServiceWithNats } from "../support/service.js";
import { publishTwice, storedEvents } from "../support/streams.js";

let under: ServiceWithNats<typeof InventoryService>;
let js: JetStreamClient;
let jsm: JetStreamManager;
let client: MeshClient<typeof InventoryService>;
let gateway: MeshClient<typeof InventoryService>;
const asAdmin = { headers: { [headers.userId]: "018f0000-0000-7000-8000-00000000a001", [headers.userRoles]: "customer,admin" } };

beforeAll(async () => {
  under = await startWithNats(inventory, { SEED_DEMO: "false" });
  ({ js, jsm, client, gateway } = under);
});
afterAll(() => under?.stop());

const newProduct = async (available: number) => {
  const productId = uuidv7();
  await client.adjustStock({ productId, delta: available, reason: "test stock" });
  return productId;
};
const stock = async (productId: string) => (await client.getStock({ productId })).stock!;
const orderCreated = (orderId: string, lines: [string, number][]) =>
  publishEvent(js, OrderCreatedSchema, { orderId, lines: lines.map(([productId, quantity]) => ({ productId, quantity })) }, { source: "order" });
const outcome = async (orderId: string) =>
  eventually(
    async () => {
      const reserved = (await storedEvents(jsm, StockReservedSchema)).some((e) => e.data.orderId === orderId);
      const rejected = (await storedEvents(jsm, StockRejectedSchema)).find((e) => e.data.orderId === orderId);
      return reserved ? "reserved" : rejected ? "rejected" : undefined;
    },
    (v) => v !== undefined,
  );

describe("inventory", () => {
  it("reserves every line of an order or none of them", async () => {
    const [a, b] = [await newProduct(5), await newProduct(1)];
    const orderId = uuidv7();
    await orderCreated(orderId, [[a, 2], [b, 3]]);
    expect(await outcome(orderId)).toBe("rejected");
    const rejected = (await storedEvents(jsm, StockRejectedSchema)).find((e) => e.data.orderId === orderId)!;
    expect(rejected.data.shortages).toMatchObject([{ productId: b, requestedQuantity: 3, availableQuantity: 1 }]);
    expect(await stock(a)).toMatchObject({ available: 5, reserved: 0 });

    const ok = uuidv7();
    await orderCreated(ok, [[a, 2], [b, 1]]);
    expect(await outcome(ok)).toBe("reserved");
    expect(await stock(a)).toMatchObject({ available: 3, reserved: 2 });
    expect(await stock(b)).toMatchObject({ available: 0, reserved: 1 });
  });

  it("lets exactly 10 of 50 concurrent orders reserve a stock of 10", async () => {
    const product = await newProduct(10);
    const orders = Array.from({ length: 50 }, () => uuidv7());
    await Promise.all(orders.map((id) => orderCreated(id, [[product, 1]])));
    const outcomes = await Promise.all(orders.map(outcome));
    expect(outcomes.filter((o) => o === "reserved")).toHaveLength(10);
    expect(outcomes.filter((o) => o === "rejected")).toHaveLength(40);
    expect(await stock(product)).toMatchObject({ available: 0, reserved: 10 });
  });

  it("applies a redelivered order.created once", async () => {
    const product = await newProduct(10);
    const orderId = uuidv7();
    const event = encodeEvent(OrderCreatedSchema, { orderId, lines: [{ productId: product, quantity: 4 }] }, { source: "order" });
    await publishTwice(js, event);
    expect(await outcome(orderId)).toBe("reserved");
    await sleep(500);
    expect(await stock(product)).toMatchObject({ available: 6, reserved: 4 });
    expect((await storedEvents(jsm, StockReservedSchema)).filter((e) => e.data.orderId === orderId)).toHaveLength(1);
  });

  it("releases on payment failure once, even when the order is cancelled too", async () => {
    const product = await newProduct(3);
    const orderId = uuidv7();
    await orderCreated(orderId, [[product, 2]]);
    await outcome(orderId);
    await publishEvent(js, PaymentFailedSchema, { orderId, reason: "card declined" }, { source: "payment" });
    await publishEvent(js, OrderCancelledSchema, { orderId, reason: "payment failed" }, { source: "order" });
    await eventually(() => stock(product), (s) => s.available === 3);
    await sleep(500);
    expect(await stock(product)).toMatchObject({ available: 3, reserved: 0 });
    expect((await storedEvents(jsm, StockReleasedSchema)).filter((e) => e.data.orderId === orderId)).toHaveLength(1);
  });

  it("turns a confirmed order's reservation into a sale", async () => {
    const product = await newProduct(3);
    const orderId = uuidv7();
    await orderCreated(orderId, [[product, 2]]);
    await outcome(orderId);
    await publishEvent(js, OrderConfirmedSchema, { orderId }, { source: "order" });
    await eventually(() => stock(product), (s) => s.reserved === 0);
    expect(await stock(product)).toMatchObject({ available: 1, reserved: 0 });
    await publishEvent(js, OrderCancelledSchema, { orderId, reason: "too late" }, { source: "order" });
    await sleep(300);
    expect(await stock(product)).toMatchObject({ available: 1, reserved: 0 }); // a sale is not released
  });

  it("reserves nothing for an order whose cancellation it handled first", async () => {
    const product = await newProduct(3);
    const orderId = uuidv7();
    await publishEvent(js, OrderCancelledSchema, { orderId, reason: "changed my mind" }, { source: "order" });
    await sleep(300);
    await orderCreated(orderId, [[product, 2]]);
    const other = uuidv7(); // a later order shows the consumer has moved past ours
    await orderCreated(other, [[product, 1]]);
    expect(await outcome(other)).toBe("reserved");
    expect((await storedEvents(jsm, StockReservedSchema)).some((e) => e.data.orderId === orderId)).toBe(false);
    expect(await stock(product)).toMatchObject({ available: 2, reserved: 1 });
  });

  it("adjusts stock for admins, never below zero", async () => {
    const product = await newProduct(2);
    expect((await gateway.adjustStock({ productId: product, delta: 5, reason: "delivery" }, asAdmin)).stock?.available).toBe(7);
    expect((await rejection(gateway.adjustStock({ productId: product, delta: -8, reason: "breakage" }, asAdmin))).code).toBe(Code.FailedPrecondition);
    expect((await rejection(gateway.adjustStock({ productId: uuidv7(), delta: -1, reason: "x" }, asAdmin))).code).toBe(Code.FailedPrecondition);
    expect((await rejection(gateway.adjustStock({ productId: product, delta: 1, reason: "x" }))).code).toBe(Code.Unauthenticated);
    expect((await rejection(client.adjustStock({ productId: product, delta: 0, reason: "x" }))).code).toBe(Code.InvalidArgument);
    expect(await stock(product)).toMatchObject({ available: 7 });
  });
});
