// CreateOrder against the order service as main() starts it, on its own real nats-server, priced
// by a catalog the test controls (its answers, and whether it is up):
//  - order's price cache (services/order/prices.ts): a product is asked of the catalog once, until
//    a product.updated for it arrives; an answer older than the latest product.updated is used but
//    never kept;
//  - the idempotency key: a retry finds its order by the key the insert refuses, and is answered
//    from the order even while the catalog cannot price anything.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs, timestampMs, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { NatsConnection } from "nats";
import { Code, ConnectError } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { ProductUpdatedSchema } from "../../gen/shop/catalog/v1/events_pb.js";
import { OrderService } from "../../gen/shop/order/v1/order_pb.js";
import { headers } from "../../mesh/rpc/call-scope.js";
import { order as orderDefinition } from "../../services/order/order.js";
import { eventually } from "../support/eventually.js";
import { metricValue } from "../support/metrics.js";
import { createTestPki } from "../support/pki.js";
import { rejection, startServer, type StubServer } from "../support/servers.js";
import { startWithNats, type ServiceWithNats } from "../support/service.js";

/** What the test's catalog answers for every product: its price and update time. */
const catalogState = { up: true, priceMinor: 1999n, updateTime: timestampFromMs(Date.parse("2026-01-01T00:00:00Z")) as Timestamp };
/** How many products the catalog was asked for, by id. */
const asked = new Map<string, number>();
let catalog: StubServer;
let order: ServiceWithNats<typeof OrderService>;
let nc: NatsConnection;

beforeAll(async () => {
  catalog = await startServer(await createTestPki(), "catalog", CatalogService, {
    batchGetProducts(req) {
      for (const id of req.ids) asked.set(id, (asked.get(id) ?? 0) + 1);
      if (!catalogState.up) throw new ConnectError("catalog is down", Code.Unavailable);
      return { products: req.ids.map((id) => ({ id, name: "Lamp", price: { currencyCode: "EUR", amountMinor: catalogState.priceMinor }, updateTime: catalogState.updateTime })) };
    },
  });
  order = await startWithNats(orderDefinition, { CATALOG_ADDRESSES: catalog.address });
  nc = await order.nats.connect();
  // The cache is on once NATS has confirmed its subscription to product.updated.
  await eventually(() => metricValue(order.svc.metricsPort, "order_price_cache_live"), (v) => v === 1, 15_000);
}, 60_000);
afterAll(async () => {
  await nc?.close();
  await order?.stop();
  await catalog?.drain();
});

const user = uuidv7();
const place = (product: string, idempotencyKey = "", quantity = 1) =>
  order.gateway.createOrder(
    {
      lines: [{ productId: product, quantity }],
      shippingAddress: { recipientName: "A", addressLines: ["1 Main St"], city: "Town", postalCode: "12345", countryCode: "DE" },
      paymentMethod: { token: "pm_abcdefghijklmnopqrstuvwxyz012345" },
      idempotencyKey,
    },
    { headers: { [headers.userId]: user, [headers.userRoles]: "customer" } },
  );
const unitPrice = async (product: string) => (await place(product)).order!.lines[0]!.unitPrice!.amountMinor;
const askedFor = (product: string) => asked.get(product) ?? 0;
const invalidations = () => metricValue(order.svc.metricsPort, "order_price_cache_invalidations_total");

/** Publishes product.updated as catalog does (core NATS is what the cache listens to), and waits until order has seen it. */
async function announce(product: string, updateTime: Timestamp, priceMinor: bigint) {
  const before = await invalidations();
  const event = create(ProductUpdatedSchema, { productId: product, name: "Lamp", price: { currencyCode: "EUR", amountMinor: priceMinor }, updateTime });
  nc.publish("shop.product.updated", toBinary(ProductUpdatedSchema, event));
  await eventually(invalidations, (n) => n > before, 15_000);
}

/** How many order.created events the order service has published. */
const createdEvents = async () => (await order.jsm.streams.info("SHOP_ORDER", { subjects_filter: "shop.order.created" })).state.subjects?.["shop.order.created"] ?? 0;

describe("order's prices", () => {
  it("asks the catalog once per product, and again after its product.updated, at the new price", async () => {
    const product = uuidv7();
    expect(await unitPrice(product)).toBe(1999n);
    expect(await unitPrice(product)).toBe(1999n);
    expect(askedFor(product)).toBe(1);

    catalogState.priceMinor = 2499n;
    catalogState.updateTime = timestampFromMs(Date.parse("2026-02-01T00:00:00Z"));
    await announce(product, catalogState.updateTime, 2499n);
    expect(await unitPrice(product)).toBe(2499n);
    expect(await unitPrice(product)).toBe(2499n);
    expect(askedFor(product)).toBe(2);
  });

  it("uses but never keeps an answer older than the latest product.updated (the catalog's own cache may lag it)", async () => {
    const product = uuidv7();
    await unitPrice(product);
    const newer = timestampFromMs(timestampMs(catalogState.updateTime) + 60_000);
    await announce(product, newer, 2999n); // the catalog still answers the older copy
    await unitPrice(product);
    await unitPrice(product);
    expect(askedFor(product)).toBe(3); // each asked again: the old copy was not kept

    catalogState.updateTime = newer;
    catalogState.priceMinor = 2999n;
    expect(await unitPrice(product)).toBe(2999n);
    expect(await unitPrice(product)).toBe(2999n);
    expect(askedFor(product)).toBe(4); // the current copy is kept
  });
});

describe("CreateOrder with an idempotency key", () => {
  it("answers a retry with the first order, one order.created in all, and refuses the key for another body", async () => {
    const product = uuidv7();
    const key = `checkout-${uuidv7()}`;
    const before = await createdEvents();
    const first = await place(product, key);
    const again = await place(product, key);
    expect(again.order?.id).toBe(first.order?.id);
    expect(again.order?.total).toEqual(first.order?.total);
    expect((await rejection(place(product, key, 2))).code).toBe(Code.FailedPrecondition);
    expect(await createdEvents()).toBe(before + 1);
  });

  it("answers a retry from the order while the catalog is down, and fails a new order with the catalog's UNAVAILABLE", async () => {
    const product = uuidv7();
    const key = `checkout-${uuidv7()}`;
    const first = await place(product, key);
    await announce(product, catalogState.updateTime, catalogState.priceMinor); // out of the cache: the retry must ask the catalog
    catalogState.up = false;
    try {
      const again = await place(product, key);
      expect(again.order?.id).toBe(first.order?.id);
      expect(askedFor(product)).toBeGreaterThan(1); // it did ask (with retries), and found its order on the way back
      expect((await rejection(place(product, key, 2))).code).toBe(Code.FailedPrecondition);
      expect((await rejection(place(uuidv7()))).code).toBe(Code.Unavailable);
    } finally {
      catalogState.up = true;
    }
  });
});
