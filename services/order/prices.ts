// The catalog's products as order prices them: from the catalog, through an in-memory cache that
// product.updated keeps correct (mesh/invalidation/), so a checkout does not wait on, nor spend CPU
// on, a catalog call per order. The cache is on only while its invalidation feed is live, a fill
// that raced an update is dropped, and a product older than its latest product.updated is never
// stored: a price changes for new orders as soon as the event reaches order.
import type { CatalogService, Product } from "../../gen/shop/catalog/v1/catalog_pb.js";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { InvalidatedCache } from "../../mesh/invalidation/invalidated-cache.js";
import { ProductFreshness } from "../../mesh/invalidation/product-freshness.js";
import type { ServiceDeps } from "../../mesh/service.js";

export interface Prices {
  /** The products of `ids` (distinct), in that order; the catalog's errors as the catalog gave them. */
  of(ids: readonly string[]): Promise<Product[]>;
}

/** At most this many products, each kept at most this long should an invalidation be lost. */
const MAX_PRODUCTS = 10_000;
const MAX_AGE_MS = 60_000;

export function cachedPrices(catalog: MeshClient<typeof CatalogService>, deps: Pick<ServiceDeps<never>, "metrics" | "keepInvalidated">): Prices {
  const cache = new InvalidatedCache<Product>({ name: "order_price_cache", what: "the price cache", maxEntries: MAX_PRODUCTS, maxAgeMs: MAX_AGE_MS, metrics: deps.metrics });
  const freshness = new ProductFreshness(MAX_PRODUCTS);
  deps.keepInvalidated(cache, (subject, payload) => freshness.announced(subject, payload));
  return {
    async of(ids) {
      const cached = ids.map((id) => cache.get(id));
      const missing = ids.filter((_, i) => !cached[i]);
      if (missing.length === 0) return cached as Product[];
      const ticket = cache.begin(); // before the read: an invalidation from here on voids what it brings
      const { products } = await catalog.batchGetProducts({ ids: missing });
      const fetched = new Map(products.map((p) => [p.id, p]));
      for (const product of products) cache.store(ticket, product.id, product, () => freshness.freshProduct(product));
      return ids.map((id, i) => cached[i] ?? fetched.get(id)!);
    },
  };
}
