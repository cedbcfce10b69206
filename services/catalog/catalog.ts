// The catalog service: products and prices, read through a Redis cache.
import { fileURLToPath } from "node:url";
import { CatalogService, ProductSchema } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { createMessageCache } from "../../mesh/data/cache.js";
import { env } from "../../mesh/config.js";
import type { Db } from "../../mesh/data/db.js";
import type { ServiceDefinition } from "../../mesh/service.js";
import type { Logger } from "../../mesh/telemetry.js";
import { demoProducts, DEMO_CURRENCY } from "./demo.js";
import { catalogHandlers, enqueueProductUpdated } from "./handlers.js";
import { createStore } from "./store.js";

const config = {
  REDIS_URL: env.string("redis://127.0.0.1:6379"),
  CACHE_TTL_SECONDS: env.int(300, 1),
  /** Seed the demo catalog into an empty database ("false" to start empty). */
  SEED_DEMO: env.oneOf(["true", "false"], "true"),
};

/** Fills an empty catalog with the demo products (and their product.updated events). */
async function seedDemo(db: Db, logger: Logger): Promise<void> {
  await db.tx(async (q) => {
    await q.query("SELECT pg_advisory_xact_lock(7302)"); // replicas starting together seed once
    const store = createStore(q);
    if ((await store.count()) > 0) return;
    logger.info("seeding");
    for (const d of demoProducts) {
      const { value: product } = await store.insert({ ...d, currency: DEMO_CURRENCY, imageUrl: "" });
      enqueueProductUpdated(q, product);
    }
    logger.info({ products: demoProducts.length }, "demo catalog seeded");
  });
}

export const catalog: ServiceDefinition<typeof CatalogService, typeof config> = {
  name: "catalog",
  service: CatalogService,
  migrations: fileURLToPath(new URL("./migrations", import.meta.url)),
  config,
  async handlers({ db, logger, config: c, onStop }) {
    if (c.SEED_DEMO === "true") await seedDemo(db, logger);
    const cache = createMessageCache(ProductSchema, { url: c.REDIS_URL, prefix: "catalog:product:", ttlSeconds: c.CACHE_TTL_SECONDS, logger });
    onStop(() => cache.close());
    // Start with a connected cache when Redis is there; never wait long for it.
    await Promise.race([cache.ready, new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
    return catalogHandlers({ db, cache });
  },
};
