// The edge's cache of public reads with the real catalog behind it: a price changed through the
// admin API is what both gateway replicas serve as soon as catalog's product.updated (its outbox,
// JetStream, each replica's own NATS subscription) has reached them. Real nats-server and
// redis-server, real identity and catalog, two real gateways over HTTP.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type RunningGateway } from "../../gateway/gateway.js";
import { catalog } from "../../services/catalog/catalog.js";
import { demoProducts } from "../../services/catalog/demo.js";
import { startIdentity, type IdentityUnderTest } from "../support/identity.js";
import { createTestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { startNats, startRedis, type NatsTestServer, type TestServer } from "../support/processes.js";
import { startTestService, type ServiceUnderTest } from "../support/service.js";
import { eventually } from "../support/eventually.js";
import { metricValue } from "../support/metrics.js";
import type { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";

const ADMIN = { email: "admin@cache.test", password: "admin-password" };
let nats: NatsTestServer;
let redis: TestServer;
let identity: IdentityUnderTest;
let catalogSvc: ServiceUnderTest<typeof CatalogService>;
const gateways: RunningGateway[] = [];
let admin: string;

beforeAll(async () => {
  const pki = await createTestPki();
  [nats, redis] = await Promise.all([startNats(pki), startRedis()]);
  [identity, catalogSvc] = await Promise.all([
    startIdentity(pki, { NATS_URL: nats.url, ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password }),
    startTestService(catalog, pki, { NATS_URL: nats.url, REDIS_URL: redis.url }),
  ]);
  await catalogSvc.eventing.ready;
  const nowhere = `127.0.0.1:${await freePort()}`;
  const others = Object.fromEntries(["inventory", "order", "payment", "notification"].map((s) => [`${s.toUpperCase()}_ADDRESSES`, nowhere]));
  for (let i = 0; i < 2; i++) {
    gateways.push(await startGateway({
      PORT: "0", METRICS_PORT: "0", LOG_LEVEL: "silent", CERTS_DIR: await pki.dir(["gateway"]), REDIS_URL: redis.url, NATS_URL: nats.url,
      IDENTITY_ADDRESSES: identity.address, CATALOG_ADDRESSES: catalogSvc.address, ...others,
    }));
  }
  // Each replica turns its cache on once NATS has confirmed its subscription.
  for (const g of gateways) await eventually(() => metricValue(g.metricsPort, "gateway_cache_live"), (v) => v === 1, 15_000);
  const login = await fetch(`http://127.0.0.1:${gateways[0]!.port}/v1/auth/login`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(ADMIN) });
  admin = (await login.json()).accessToken;
}, 90_000);
afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop()));
  await Promise.all([identity?.stop(), catalogSvc?.stop()]);
  await Promise.all([nats?.stop(), redis?.stop()]);
});

const get = async (g: RunningGateway, path: string) => {
  const res = await fetch(`http://127.0.0.1:${g.port}${path}`);
  return { status: res.status, text: await res.text() };
};
const lookups = (g: RunningGateway, result: string) => metricValue(g.metricsPort, "gateway_cache_lookups_total", { result });

describe("edge cache: public product reads", () => {
  it("serves a repeated read from the cache, byte for byte", async () => {
    const g = gateways[0]!;
    const path = `/v1/products/${demoProducts[1]!.id}`;
    const [hits, misses] = [await lookups(g, "hit"), await lookups(g, "miss")];
    const first = await get(g, path);
    const second = await get(g, path);
    expect(first.status).toBe(200);
    expect(second).toEqual(first);
    expect([await lookups(g, "miss"), await lookups(g, "hit")]).toEqual([misses + 1, hits + 1]);
  });

  it("serves the new price on every replica as soon as the update's event has reached it", async () => {
    const id = demoProducts[0]!.id;
    const path = `/v1/products/${id}`;
    const listing = "/v1/products?pageSize=50";
    const priceIn = (text: string) => JSON.parse(text).product.price.amountMinor;
    const listedPrice = (text: string) => JSON.parse(text).products.find((p: { id: string }) => p.id === id).price.amountMinor;
    for (const g of gateways) {
      for (let i = 0; i < 2; i++) expect((await get(g, path)).status).toBe(200); // cached now, listing too
      await get(g, listing);
    }
    const old = priceIn((await get(gateways[0]!, path)).text);
    const invalidations = await Promise.all(gateways.map((g) => metricValue(g.metricsPort, "gateway_cache_invalidations_total")));

    const newPrice = String(Number(old) + 111);
    const update = await fetch(`http://127.0.0.1:${gateways[1]!.port}${path}`, {
      method: "PATCH",
      headers: { "content-type": "application/json", authorization: `Bearer ${admin}` },
      body: JSON.stringify({ price: { amountMinor: newPrice, currencyCode: "EUR" } }),
    });
    expect(update.status).toBe(200);
    for (const [i, g] of gateways.entries()) {
      await eventually(() => metricValue(g.metricsPort, "gateway_cache_invalidations_total"), (n) => n > invalidations[i]!, 15_000);
      // The event is there: from now on no replica may answer the old price, single or listed.
      expect(priceIn((await get(g, path)).text)).toBe(newPrice);
      expect(priceIn((await get(g, path)).text)).toBe(newPrice);
      expect(listedPrice((await get(g, listing)).text)).toBe(newPrice);
    }
  });
});
