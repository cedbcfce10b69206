// The catalog against real PGlite, Redis and NATS: pages and filters over the demo catalog,
// admin-only writes, product.updated through the outbox, and a cache that never serves an old price.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import { create, fromBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import type { NatsConnection } from "nats";
import { CatalogService, ProductSchema } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { ProductUpdatedSchema } from "../../gen/shop/catalog/v1/events_pb.js";
import { createMessageCache } from "../../mesh/data/cache.js";
import { headers } from "../../mesh/rpc/call-scope.js";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { streamName } from "../../mesh/events/events.js";
import { catalog } from "../../services/catalog/catalog.js";
import { demoProducts } from "../../services/catalog/demo.js";
import { eventually } from "../support/eventually.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { startNats, startRedis, type NatsTestServer, type TestServer } from "../support/processes.js";
import { rejection, silentLogger, sleep } from "../support/servers.js";
import { startTestService, type ServiceUnderTest } from "../support/service.js";

let pki: TestPki;
let nats: NatsTestServer;
let redisServer: TestServer;
let redis: Redis;
let nc: NatsConnection;
let svc: ServiceUnderTest<typeof CatalogService>;
let client: MeshClient<typeof CatalogService>;
let gateway: MeshClient<typeof CatalogService>;

const asAdmin = { headers: { [headers.userId]: "018f0000-0000-7000-8000-00000000a001", [headers.userRoles]: "customer,admin" } };
const asCustomer = { headers: { [headers.userId]: "018f0000-0000-7000-8000-00000000c001", [headers.userRoles]: "customer" } };
const eur = (amountMinor: number) => ({ amountMinor: BigInt(amountMinor), currencyCode: "EUR" });

beforeAll(async () => {
  pki = await createTestPki();
  [nats, redisServer] = await Promise.all([startNats(pki), startRedis()]);
  redis = new Redis(redisServer.url);
  nc = await nats.connect();
  svc = await startTestService(catalog, pki, { NATS_URL: nats.url, REDIS_URL: redisServer.url });
  client = await svc.client();
  gateway = await svc.client("gateway");
});
afterAll(async () => {
  client?.close();
  gateway?.close();
  await svc?.stop();
  redis?.disconnect();
  await nc?.close();
  await Promise.all([nats?.stop(), redisServer?.stop()]);
});

describe("catalog", () => {
  it("seeds the demo catalog and pages through it with stable tokens", async () => {
    const seen: string[] = [];
    let pageToken = "";
    let pages = 0;
    do {
      const page = await client.listProducts({ pageSize: 5, pageToken });
      seen.push(...page.products.map((p) => p.sku));
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken);
    expect(pages).toBe(3);
    expect(seen).toEqual(demoProducts.map((p) => p.sku));
  });

  it("filters by text and by category", async () => {
    const wool = await client.listProducts({ query: "WOOL" });
    expect(wool.products.map((p) => p.sku).sort()).toEqual(["BLK-009", "HOO-005", "SOC-006"]);
    const outdoor = await client.listProducts({ category: "outdoor" });
    expect(outdoor.products.every((p) => p.category === "outdoor")).toBe(true);
    expect(outdoor.products).toHaveLength(3);
    const none = await client.listProducts({ query: "100%_" }); // LIKE wildcards are literal
    expect(none.products).toEqual([]);
    expect((await rejection(client.listProducts({ pageToken: "bogus" }))).code).toBe(Code.InvalidArgument);
  });

  it("gets one product, a batch in request order, and names what is missing", async () => {
    const [a, b] = [demoProducts[3]!, demoProducts[0]!];
    expect((await client.getProduct({ id: a.id })).product?.price).toMatchObject(eur(Number(a.priceMinor)));
    const batch = await client.batchGetProducts({ ids: [a.id, b.id] });
    expect(batch.products.map((p) => p.sku)).toEqual([a.sku, b.sku]);
    const missing = "018f0000-0000-7000-8000-0000000000ff";
    const err = await rejection(client.batchGetProducts({ ids: [a.id, missing] }));
    expect(err.code).toBe(Code.NotFound);
    expect(err.rawMessage).toContain(missing);
  });

  it("lets only admins create and update products", async () => {
    const product = { sku: "NEW-100", name: "New thing", category: "home", price: eur(1000) };
    expect((await rejection(gateway.createProduct(product))).code).toBe(Code.Unauthenticated);
    expect((await rejection(gateway.createProduct(product, asCustomer))).code).toBe(Code.PermissionDenied);
    const created = (await gateway.createProduct(product, asAdmin)).product!;
    expect(created.sku).toBe("NEW-100");
    expect((await rejection(gateway.createProduct(product, asAdmin))).code).toBe(Code.AlreadyExists);
    const bad = await rejection(gateway.createProduct({ ...product, sku: "NEW-101", price: eur(0) }, asAdmin));
    expect(bad.code).toBe(Code.InvalidArgument);
    expect(bad.rawMessage).toContain("price must be more than zero");
    expect((await rejection(gateway.updateProduct({ id: created.id, name: "x" }, asCustomer))).code).toBe(Code.PermissionDenied);
  });

  it("publishes product.updated with the new price through the outbox", async () => {
    await svc.eventing.ready;
    const id = demoProducts[1]!.id;
    await gateway.updateProduct({ id, price: eur(7777) }, asAdmin);
    const jsm = await nc.jetstreamManager();
    const msg = await eventually(
      () => jsm.streams.getMessage(streamName("catalog"), { last_by_subj: "shop.product.updated" }).catch(() => undefined),
      (m) => m !== undefined && fromBinary(ProductUpdatedSchema, m.data).productId === id,
    );
    expect(fromBinary(ProductUpdatedSchema, msg!.data).price?.amountMinor).toBe(7777n);
  });

  it("never returns an old price after an update, through the cache", async () => {
    const id = demoProducts[2]!.id;
    await client.getProduct({ id }); // cached now
    expect(await redis.exists(`catalog:product:${id}`)).toBe(1);
    for (let price = 6000; price < 6020; price++) {
      const reads = Promise.all([client.getProduct({ id }), client.getProduct({ id })]); // racing the write
      await gateway.updateProduct({ id, price: eur(price) }, asAdmin);
      await reads;
      expect((await client.getProduct({ id })).product?.price?.amountMinor).toBe(BigInt(price));
    }
  });

  it("keeps answering from the database while Redis is down", async () => {
    await redisServer.stop({ keepData: true });
    const id = demoProducts[4]!.id;
    await gateway.updateProduct({ id, price: eur(12345) }, asAdmin);
    expect((await client.getProduct({ id })).product?.price?.amountMinor).toBe(12345n);
    await redisServer.restart();
    await sleep(300); // the client reconnects
    expect((await client.getProduct({ id })).product?.price?.amountMinor).toBe(12345n);
  });
});

describe("message cache", () => {
  it("does not let a reader that loaded before an update put the old value back", async () => {
    const cache = createMessageCache(ProductSchema, { url: redisServer.url, prefix: "race:", ttlSeconds: 60, logger: silentLogger });
    await cache.ready;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    // The reader misses, loads the old row, and stalls before filling the cache...
    const reader = cache.getMany(["p1"], async () => {
      await gate;
      return new Map([["p1", { value: create(ProductSchema, { name: "old" }), version: 1n }]]);
    });
    await sleep(20);
    // ...while the writer commits and replaces the value.
    await cache.put("p1", { value: create(ProductSchema, { name: "new" }), version: 2n });
    release();
    await reader;
    const after = await cache.getMany(["p1"], async () => new Map());
    expect(after.get("p1")?.name).toBe("new");
    await cache.close();
  });

  it("keeps the newer of two writers' values whatever order their writes land in", async () => {
    const cache = createMessageCache(ProductSchema, { url: redisServer.url, prefix: "writers:", ttlSeconds: 60, logger: silentLogger });
    await cache.ready;
    await cache.put("p2", { value: create(ProductSchema, { name: "v3" }), version: 3n });
    await cache.put("p2", { value: create(ProductSchema, { name: "v2" }), version: 2n }); // the slower writer lands last
    expect((await cache.getMany(["p2"], async () => new Map())).get("p2")?.name).toBe("v3");
    await cache.put("p2", { value: create(ProductSchema, { name: "v10" }), version: 10n }); // 10 > 3 though "10" < "3" as text
    expect((await cache.getMany(["p2"], async () => new Map())).get("p2")?.name).toBe("v10");
    await cache.close();
  });
});
