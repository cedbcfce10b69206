// CreateOrder's idempotency key against the order service as main() starts it, on its own real
// nats-server, priced by a catalog the test can take away: a retry finds its order by the key the
// insert refuses, and is answered from the order even while the catalog cannot price anything.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { OrderService } from "../../gen/shop/order/v1/order_pb.js";
import { headers } from "../../mesh/rpc/call-scope.js";
import { order as orderDefinition } from "../../services/order/order.js";
import { createTestPki } from "../support/pki.js";
import { rejection, startServer, type StubServer } from "../support/servers.js";
import { startWithNats, type ServiceWithNats } from "../support/service.js";

const product = uuidv7();
let catalogUp = true;
let pricings = 0;
let catalog: StubServer;
let order: ServiceWithNats<typeof OrderService>;

beforeAll(async () => {
  catalog = await startServer(await createTestPki(), "catalog", CatalogService, {
    batchGetProducts(req) {
      pricings++;
      if (!catalogUp) throw new ConnectError("catalog is down", Code.Unavailable);
      return { products: req.ids.map((id) => ({ id, name: "Lamp", price: { currencyCode: "EUR", amountMinor: 1999n } })) };
    },
  });
  order = await startWithNats(orderDefinition, { CATALOG_ADDRESSES: catalog.address });
}, 60_000);
afterAll(async () => {
  await order?.stop();
  await catalog?.drain();
});

const user = uuidv7();
const place = (idempotencyKey: string, quantity = 1) =>
  order.gateway.createOrder(
    {
      lines: [{ productId: product, quantity }],
      shippingAddress: { recipientName: "A", addressLines: ["1 Main St"], city: "Town", postalCode: "12345", countryCode: "DE" },
      paymentMethod: { token: "pm_abcdefghijklmnopqrstuvwxyz012345" },
      idempotencyKey,
    },
    { headers: { [headers.userId]: user, [headers.userRoles]: "customer" } },
  );

/** How many order.created events the order service has published. */
const createdEvents = async () => (await order.jsm.streams.info("SHOP_ORDER", { subjects_filter: "shop.order.created" })).state.subjects?.["shop.order.created"] ?? 0;

describe("CreateOrder with an idempotency key", () => {
  it("answers a retry with the first order, one order.created in all, and refuses the key for another body", async () => {
    const key = `checkout-${uuidv7()}`;
    const before = await createdEvents();
    const first = await place(key);
    const again = await place(key);
    expect(again.order?.id).toBe(first.order?.id);
    expect(again.order?.total).toEqual(first.order?.total);
    expect((await rejection(place(key, 2))).code).toBe(Code.FailedPrecondition);
    expect(await createdEvents()).toBe(before + 1);
  });

  it("answers a retry from the order while the catalog is down, and fails a new order with the catalog's UNAVAILABLE", async () => {
    const key = `checkout-${uuidv7()}`;
    const first = await place(key);
    catalogUp = false;
    try {
      const asked = pricings;
      const again = await place(key);
      expect(again.order?.id).toBe(first.order?.id);
      expect(pricings).toBeGreaterThan(asked); // the retry did try the catalog: the key was found on the way back
      expect((await rejection(place(key, 2))).code).toBe(Code.FailedPrecondition);
      expect((await rejection(place(`checkout-${uuidv7()}`))).code).toBe(Code.Unavailable);
    } finally {
      catalogUp = true;
    }
  });
});
