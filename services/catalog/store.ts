// The catalog's SQL. Pages are keyset pages over the id (UUIDv7, so creation order): stable under
// inserts, and as fast on page 1,000 as on page 1.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { ProductSchema, type Product } from "../../gen/shop/catalog/v1/catalog_pb.js";
import type { Versioned } from "../../mesh/data/cache.js";
import type { Queryable } from "../../mesh/data/db.js";

interface ProductRow extends Record<string, unknown> {
  id: string;
  sku: string;
  name: string;
  description: string;
  category: string;
  price_minor: string | number | bigint;
  currency: string;
  image_url: string;
  created_at: Date;
  updated_at: Date;
  version: string | number | bigint;
}

const COLUMNS = "id, sku, name, description, category, price_minor, currency, image_url, created_at, updated_at, version";

/** A product and its row version (bumped by every write). */
export const versioned = (row: ProductRow): Versioned<Product> => ({ value: toProduct(row), version: BigInt(row.version) });

export function toProduct(row: ProductRow): Product {
  return create(ProductSchema, {
    id: row.id,
    sku: row.sku,
    name: row.name,
    description: row.description,
    category: row.category,
    price: { amountMinor: BigInt(row.price_minor), currencyCode: row.currency.trim() },
    imageUrl: row.image_url,
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });
}

export interface NewProduct {
  id: string;
  sku: string;
  name: string;
  description: string;
  category: string;
  priceMinor: bigint;
  currency: string;
  imageUrl: string;
}

export interface ProductChanges {
  name?: string;
  description?: string;
  category?: string;
  priceMinor?: bigint;
  currency?: string;
  imageUrl?: string;
}

export function createStore(db: Queryable) {
  return {
    async insert(p: NewProduct): Promise<Versioned<Product>> {
      const [row] = await db.query<ProductRow>(
        `INSERT INTO products (id, sku, name, description, category, price_minor, currency, image_url)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ${COLUMNS}`,
        [p.id, p.sku, p.name, p.description, p.category, p.priceMinor.toString(), p.currency, p.imageUrl],
      );
      return versioned(row!);
    },

    async update(id: string, c: ProductChanges): Promise<Versioned<Product> | undefined> {
      const [row] = await db.query<ProductRow>(
        `UPDATE products SET
           name = COALESCE($2, name), description = COALESCE($3, description), category = COALESCE($4, category),
           price_minor = COALESCE($5::bigint, price_minor), currency = COALESCE($6, currency),
           image_url = COALESCE($7, image_url), updated_at = now(), version = version + 1
         WHERE id = $1 RETURNING ${COLUMNS}`,
        [id, c.name ?? null, c.description ?? null, c.category ?? null, c.priceMinor?.toString() ?? null, c.currency ?? null, c.imageUrl ?? null],
      );
      return row && versioned(row);
    },

    async byIds(ids: readonly string[]): Promise<Map<string, Versioned<Product>>> {
      const rows = await db.query<ProductRow>(`SELECT ${COLUMNS} FROM products WHERE id = ANY($1::uuid[])`, [ids]);
      return new Map(rows.map((r) => [r.id, versioned(r)]));
    },

    /** One page after `afterId`, filtered by a text query (name, description, sku) and category. */
    async page(opts: { afterId?: string; limit: number; query?: string; category?: string }): Promise<Product[]> {
      const rows = await db.query<ProductRow>(
        `SELECT ${COLUMNS} FROM products
         WHERE ($1::uuid IS NULL OR id > $1::uuid)
           AND ($2::text IS NULL OR name ILIKE $2 OR description ILIKE $2 OR sku ILIKE $2)
           AND ($3::text IS NULL OR category = $3)
         ORDER BY id LIMIT $4`,
        [opts.afterId ?? null, opts.query ? `%${opts.query.replace(/[\\%_]/g, (m) => `\\${m}`)}%` : null, opts.category ?? null, opts.limit],
      );
      return rows.map(toProduct);
    },

    async count(): Promise<number> {
      const [row] = await db.query<{ n: number }>("SELECT count(*)::int AS n FROM products");
      return row!.n;
    },
  };
}
