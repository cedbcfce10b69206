// The rules that keep the edge cache correct, each provoked on purpose: a read that began before an
// invalidation does not store its older answer afterwards; an answer older than the latest event
// says (catalog's own cache not yet replaced) is served but not stored; while NATS is away nothing
// is cached and nothing cached survives; what a signed-in caller asks is never cached. Real
// nats-server (the test publishes product.updated as catalog's relay would), real redis-server, a
// real gateway over HTTP; catalog, identity and order are real mTLS gRPC servers whose handlers
// the test writes, so it can hold a read mid-way and count what reaches them.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { create, toBinary } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { exportJWK, generateKeyPair, SignJWT } from "jose";
import type { NatsConnection } from "nats";
import { CatalogService, ProductSchema, type Product } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { ProductUpdatedSchema } from "../../gen/shop/catalog/v1/events_pb.js";
import { EdgeAccess } from "../../gen/shop/common/v1/edge_pb.js";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { OrderService } from "../../gen/shop/order/v1/order_pb.js";
import { edgeAccess } from "../../gateway/access.js";
import { startGateway, type RunningGateway } from "../../gateway/gateway.js";
import { cachedMethods } from "../../gateway/public-reads.js";
import { eventSubject } from "../../mesh/events/events.js";
import { createTestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { startNats, startRedis, type NatsTestServer, type TestServer } from "../support/processes.js";
import { startServer, type StubServer } from "../support/servers.js";
import { eventually } from "../support/eventually.js";
import { metricValue } from "../support/metrics.js";

const PRODUCT_ID = "0190a000-0000-7000-8000-0000000000aa";
const path = `/v1/products/${PRODUCT_ID}`;

/** What the catalog double answers: the product as "its database" holds it, and calls counted. */
const catalogState = { price: 100n, updatedMs: Date.UTC(2026, 0, 1), calls: 0, orderCalls: 0, hold: undefined as Promise<void> | undefined, entered: () => {} };
const product = (price = catalogState.price, updatedMs = catalogState.updatedMs): Product =>
  create(ProductSchema, { id: PRODUCT_ID, sku: "SKU-1", name: "Mug", category: "kitchen", price: { amountMinor: price, currencyCode: "EUR" }, updateTime: timestampFromMs(updatedMs) });

let nats: NatsTestServer;
let redis: TestServer;
let operator: NatsConnection;
const stubs: StubServer[] = [];
let gateway: RunningGateway;
let token: string;

beforeAll(async () => {
  const pki = await createTestPki();
  [nats, redis] = await Promise.all([startNats(pki), startRedis()]);
  operator = await nats.connect();
  const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  const jwk = await exportJWK(publicKey);
  token = await new SignJWT({ roles: ["customer"] }).setProtectedHeader({ alg: "EdDSA", kid: "k1" }).setSubject("user-1")
    .setIssuer("shopmesh-identity").setAudience("shopmesh").setExpirationTime("10m").sign(privateKey);
  const catalog = await startServer(pki, "catalog", CatalogService, {
    async getProduct() {
      catalogState.calls++;
      const answer = product(); // as it is when the read reaches "the database"
      catalogState.entered();
      await catalogState.hold;
      return { product: answer };
    },
  });
  const identity = await startServer(pki, "identity", IdentityService, {
    getJwks: () => ({ keys: [{ kty: jwk.kty, crv: jwk.crv, x: jwk.x, kid: "k1", alg: "EdDSA" }] }),
  });
  const order = await startServer(pki, "order", OrderService, {
    getOrder: (req) => (catalogState.orderCalls++, { order: { id: req.id } }),
  });
  stubs.push(catalog, identity, order);
  const nowhere = `127.0.0.1:${await freePort()}`;
  gateway = await startGateway({
    PORT: "0", METRICS_PORT: "0", LOG_LEVEL: "silent", CERTS_DIR: await pki.dir(["gateway"]), REDIS_URL: redis.url, NATS_URL: nats.url,
    CATALOG_ADDRESSES: catalog.address, IDENTITY_ADDRESSES: identity.address, ORDER_ADDRESSES: order.address,
    INVENTORY_ADDRESSES: nowhere, PAYMENT_ADDRESSES: nowhere, NOTIFICATION_ADDRESSES: nowhere,
  });
  await waitLive(1);
}, 60_000);
afterAll(async () => {
  await gateway?.stop();
  await operator?.close();
  await Promise.all(stubs.map((s) => s.drain()));
  await Promise.all([nats?.stop(), redis?.stop()]);
});

const waitLive = (value: number) => eventually(() => metricValue(gateway.metricsPort, "gateway_cache_live"), (v) => v === value, 15_000);
const invalidations = () => metricValue(gateway.metricsPort, "gateway_cache_invalidations_total");
const dropped = (reason: string) => metricValue(gateway.metricsPort, "gateway_cache_fills_dropped_total", { reason });
const price = async (headers: Record<string, string> = {}) => {
  const res = await fetch(`http://127.0.0.1:${gateway.port}${path}`, { headers });
  expect(res.status).toBe(200);
  return BigInt((await res.json()).product.price.amountMinor);
};

/** Commits a change in "catalog's database" and publishes its product.updated; resolves once the gateway has it. */
async function updateProduct(newPrice: bigint, updatedMs = catalogState.updatedMs + 1_000) {
  const before = await invalidations();
  Object.assign(catalogState, { price: newPrice, updatedMs });
  const event = create(ProductUpdatedSchema, { productId: PRODUCT_ID, price: { amountMinor: newPrice, currencyCode: "EUR" }, updateTime: timestampFromMs(updatedMs) });
  // After a NATS restart: publish once this connection is back (a round trip succeeds), not into
  // its reconnect buffer; a flush sent while it is still away fails and is tried again.
  await eventually(() => operator.flush().then(() => true, () => false), Boolean, 30_000);
  operator.publish(eventSubject(ProductUpdatedSchema), toBinary(ProductUpdatedSchema, event));
  await eventually(invalidations, (n) => n > before);
}

describe("edge cache: what it may cache", () => {
  it("is exactly the public unary reads of catalog, the service whose events invalidate it", () => {
    const methods = [...cachedMethods()];
    expect(methods.map((m) => `${m.parent.name}.${m.name}`).sort()).toEqual(["CatalogService.BatchGetProducts", "CatalogService.GetProduct", "CatalogService.ListProducts"]);
    expect(methods.every((m) => edgeAccess(m) === EdgeAccess.PUBLIC)).toBe(true);
  });

  it("never answers a signed-in caller from it, nor caches a user's route", async () => {
    await price(); // cached for anonymous callers
    const calls = catalogState.calls;
    await price({ authorization: `Bearer ${token}` });
    await price({ authorization: `Bearer ${token}` });
    expect(catalogState.calls).toBe(calls + 2);
    const orderCalls = catalogState.orderCalls;
    for (let i = 0; i < 2; i++) {
      const res = await fetch(`http://127.0.0.1:${gateway.port}/v1/orders/0190a000-0000-7000-8000-0000000000bb`, { headers: { authorization: `Bearer ${token}` } });
      expect(res.status).toBe(200);
    }
    expect(catalogState.orderCalls).toBe(orderCalls + 2);
  });

  it("does not cache errors", async () => {
    const missing = async () => (await fetch(`http://127.0.0.1:${gateway.port}/v1/products/not-a-uuid`)).status;
    const misses = await metricValue(gateway.metricsPort, "gateway_cache_lookups_total", { result: "miss" });
    expect([await missing(), await missing()]).toEqual([400, 400]);
    expect(await metricValue(gateway.metricsPort, "gateway_cache_lookups_total", { result: "miss" })).toBe(misses + 2);
  });
});

describe("edge cache: races with updates", () => {
  it("drops the answer of a read that began before an invalidation", async () => {
    await updateProduct(100n); // nothing cached for the product now
    let release!: () => void;
    let entered!: () => void;
    catalogState.hold = new Promise<void>((r) => (release = r));
    const inCatalog = new Promise<void>((r) => (entered = r));
    catalogState.entered = entered;
    const raced = await dropped("raced");
    const slowRead = price(); // reads price 100 in "the database", then waits
    await inCatalog;
    catalogState.hold = undefined;
    await updateProduct(200n); // commits and is announced while that read is still on its way
    release();
    expect(await slowRead).toBe(100n); // answered as read; not stored
    expect(await dropped("raced")).toBe(raced + 1);
    const calls = catalogState.calls;
    expect(await price()).toBe(200n);
    expect(catalogState.calls).toBe(calls + 1);
    expect(await price()).toBe(200n); // and this one is cached
    expect(catalogState.calls).toBe(calls + 1);
  });

  it("does not store an answer older than the latest product.updated (catalog's own cache not yet replaced)", async () => {
    await updateProduct(300n, catalogState.updatedMs + 1_000);
    const announced = catalogState.updatedMs;
    Object.assign(catalogState, { price: 200n, updatedMs: announced - 1_000 }); // catalog still answers the older copy
    const stale = await dropped("stale");
    const calls = catalogState.calls;
    expect(await price()).toBe(200n);
    expect(await price()).toBe(200n);
    expect(catalogState.calls).toBe(calls + 2); // served, never stored
    expect(await dropped("stale")).toBe(stale + 2);
    Object.assign(catalogState, { price: 300n, updatedMs: announced }); // caught up
    expect([await price(), await price()]).toEqual([300n, 300n]);
    expect(catalogState.calls).toBe(calls + 3);
  });
});

describe("edge cache: while NATS is away", () => {
  it("caches nothing, keeps nothing from before, and starts again empty when NATS is back", async () => {
    await price();
    await price(); // cached
    await nats.stop({ keepData: true });
    await waitLive(0);
    catalogState.price = 999n; // changed while no event could come
    const calls = catalogState.calls;
    expect([await price(), await price()]).toEqual([999n, 999n]);
    expect(catalogState.calls).toBe(calls + 2);
    expect(await metricValue(gateway.metricsPort, "gateway_cache_entries")).toBe(0);

    await nats.restart();
    await waitLive(1);
    expect([await price(), await price()]).toEqual([999n, 999n]);
    expect(catalogState.calls).toBe(calls + 3); // cached again
    await updateProduct(1_000n); // and invalidated again: the subscription came back with the connection
    expect(await price()).toBe(1_000n);
  }, 30_000);
});
