// CatalogService handlers. Reads go through the Redis cache; writes commit the product and its
// product.updated event together (outbox), then replace the cached value.
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { ProductUpdatedSchema } from "../../gen/shop/catalog/v1/events_pb.js";
import { CatalogService, type Product, type ProductSchema } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { requireAdmin } from "../../mesh/rpc/call-scope.js";
import type { MessageCache, Versioned } from "../../mesh/data/cache.js";
import { isUniqueViolation, type Db, type Queryable, type Tx } from "../../mesh/data/db.js";
import { enqueue } from "../../mesh/events/outbox.js";
import { pageLimit, pageToken, paginate } from "../../mesh/rpc/paging.js";
import { createStore } from "./store.js";

/** Writes product.updated for `product` in the caller's transaction. */
export const enqueueProductUpdated = (q: Tx, product: Product) =>
  enqueue(q, ProductUpdatedSchema, {
    productId: product.id,
    sku: product.sku,
    name: product.name,
    description: product.description,
    category: product.category,
    price: product.price,
    imageUrl: product.imageUrl,
    createTime: product.createTime,
    updateTime: product.updateTime,
  }, { source: "catalog" });

export interface CatalogDeps {
  db: Db;
  cache: MessageCache<typeof ProductSchema>;
}

export function catalogHandlers({ db, cache }: CatalogDeps): ServiceImpl<typeof CatalogService> {
  const store = createStore(db);
  const load = (ids: readonly string[]) => cache.getMany(ids, (missing) => store.byIds(missing));

  const write = async (change: (q: Queryable) => Promise<Versioned<Product> | undefined>) => {
    const written = await db.tx(async (q) => {
      const entry = await change(q);
      if (entry) enqueueProductUpdated(q, entry.value);
      return entry;
    });
    if (!written) return undefined;
    await cache.put(written.value.id, written);
    return written.value;
  };

  return {
    async listProducts(req) {
      const limit = pageLimit(req.pageSize);
      const rows = await store.page({
        afterId: pageToken.decode(req.pageToken),
        limit: limit + 1, // one more tells whether another page exists
        query: req.query.trim() || undefined,
        category: req.category || undefined,
      });
      const { page, nextPageToken } = paginate(rows, limit);
      return { products: page, nextPageToken };
    },

    async getProduct(req) {
      const product = (await load([req.id])).get(req.id);
      if (!product) throw new ConnectError(`product ${req.id} not found`, Code.NotFound);
      return { product };
    },

    async batchGetProducts(req) {
      const found = await load(req.ids);
      const missing = req.ids.filter((id) => !found.has(id));
      if (missing.length) throw new ConnectError(`products not found: ${missing.join(", ")}`, Code.NotFound);
      return { products: req.ids.map((id) => found.get(id)!) };
    },

    async createProduct(req, ctx) {
      requireAdmin(ctx);
      try {
        const product = await write((q) =>
          createStore(q).insert({
            id: uuidv7(),
            sku: req.sku,
            name: req.name.trim(),
            description: req.description,
            category: req.category,
            priceMinor: req.price!.amountMinor,
            currency: req.price!.currencyCode,
            imageUrl: req.imageUrl,
          }),
        );
        return { product };
      } catch (err) {
        if (isUniqueViolation(err)) throw new ConnectError(`a product with sku ${req.sku} already exists`, Code.AlreadyExists);
        throw err;
      }
    },

    async updateProduct(req, ctx) {
      requireAdmin(ctx);
      const product = await write((q) =>
        createStore(q).update(req.id, {
          name: req.name?.trim(),
          description: req.description,
          category: req.category,
          priceMinor: req.price?.amountMinor,
          currency: req.price?.currencyCode,
          imageUrl: req.imageUrl,
        }),
      );
      if (!product) throw new ConnectError(`product ${req.id} not found`, Code.NotFound);
      return { product };
    },
  };
}
