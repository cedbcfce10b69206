// Inventory's SQL: all-or-nothing reservations, releases, commits and adjustments.
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { StockSchema, type Stock } from "../../gen/shop/inventory/v1/inventory_pb.js";
import type { Queryable } from "../../mesh/data/db.js";

interface StockRow extends Record<string, unknown> {
  product_id: string;
  available: number;
  reserved: number;
  updated_at: Date;
}

export interface Line {
  productId: string;
  quantity: number;
}

export const toStock = (row: StockRow | undefined, productId: string): Stock =>
  create(StockSchema, {
    productId,
    available: row?.available ?? 0,
    reserved: row?.reserved ?? 0,
    updateTime: row ? timestampFromDate(row.updated_at) : undefined,
  });

/** An order's lines, to reserve. */
export interface OrderLines {
  orderId: string;
  lines: Line[];
}

/** A product an order wants more of than there is. */
export interface Shortage {
  productId: string;
  requestedQuantity: number;
  availableQuantity: number;
}

export function createStore(q: Queryable) {
  // Serializes everything that happens to one order's reservation, until the transaction ends.
  const lockOrder = (orderId: string) => q.query("SELECT pg_advisory_xact_lock(hashtext($1))", [orderId]);
  return {
    async get(productId: string): Promise<Stock> {
      const [row] = await q.query<StockRow>("SELECT * FROM stock_levels WHERE product_id = $1", [productId]);
      return toStock(row, productId);
    },

    /**
     * Reserves each order's lines, all or none per order, as if the orders came one by one in the
     * given order; answers, per order, its shortages (none: reserved) or "closed" (cancelled
     * before we saw it created: nothing reserved). A few statements whatever the number of orders
     * and lines:
     * - each order's lock, in the given order, so that a cancellation handled at the same moment
     *   waits and then sees (and releases) what we reserved;
     * - which of them are closed (a statement of its own, so that it sees what those locks waited for);
     * - the stock rows, locked in product order (concurrent batches lock them in the same order);
     * - all stock taken and all reservations recorded by one statement.
     * The CHECK on stock (available >= 0) backs this up in the table itself.
     */
    async reserveOrders(orders: readonly OrderLines[]): Promise<Map<string, Shortage[] | "closed">> {
      const ids = orders.map((o) => o.orderId);
      await q.query("SELECT pg_advisory_xact_lock(hashtext(id)) FROM unnest($1::text[]) WITH ORDINALITY AS o(id, n) ORDER BY n", [ids]);
      const closed = new Set((await q.query<{ order_id: string }>("SELECT order_id FROM closed_orders WHERE order_id = ANY($1::uuid[])", [ids])).map((r) => r.order_id));
      const products = [...new Set(orders.filter((o) => !closed.has(o.orderId)).flatMap((o) => o.lines.map((l) => l.productId)))].sort();
      const rows = products.length
        ? await q.query<StockRow>("SELECT product_id, available FROM stock WHERE product_id = ANY($1::uuid[]) ORDER BY product_id FOR UPDATE", [products])
        : [];
      const available = new Map(rows.map((r) => [r.product_id, r.available]));
      const outcomes = new Map<string, Shortage[] | "closed">();
      const taken: { orderId: string; productId: string; quantity: number }[] = [];
      for (const { orderId, lines } of orders) {
        if (closed.has(orderId)) {
          outcomes.set(orderId, "closed");
          continue;
        }
        const wanted = new Map<string, number>();
        for (const l of lines) wanted.set(l.productId, (wanted.get(l.productId) ?? 0) + l.quantity);
        const shortages = [...wanted]
          .filter(([id, quantity]) => (available.get(id) ?? 0) < quantity)
          .map(([id, quantity]) => ({ productId: id, requestedQuantity: quantity, availableQuantity: available.get(id) ?? 0 }))
          .sort((a, b) => a.productId.localeCompare(b.productId));
        outcomes.set(orderId, shortages);
        if (shortages.length) continue;
        for (const [productId, quantity] of wanted) {
          available.set(productId, available.get(productId)! - quantity);
          taken.push({ orderId, productId, quantity });
        }
      }
      if (taken.length) {
        await q.query(
          `WITH taken AS (
             UPDATE stock s SET available = s.available - w.quantity, updated_at = now()
             FROM (SELECT product_id, sum(quantity)::int AS quantity FROM unnest($2::uuid[], $3::int[]) AS t(product_id, quantity) GROUP BY product_id) w
             WHERE s.product_id = w.product_id)
           INSERT INTO reservations (order_id, product_id, quantity, status)
           SELECT order_id, product_id, quantity, 'reserved' FROM unnest($1::uuid[], $2::uuid[], $3::int[]) AS r(order_id, product_id, quantity)`,
          [taken.map((t) => t.orderId), taken.map((t) => t.productId), taken.map((t) => t.quantity)],
        );
      }
      return outcomes;
    },

    /** Marks an order cancelled (a later order.created reserves nothing) and releases what it holds. */
    async cancelOrder(orderId: string): Promise<Line[]> {
      await lockOrder(orderId);
      await q.query("INSERT INTO closed_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING", [orderId]);
      return this.release(orderId);
    },

    /** Gives an order's held lines back to available stock; returns them (none if nothing was held). */
    async release(orderId: string): Promise<Line[]> {
      const rows = await q.query<{ product_id: string; quantity: number }>(
        "UPDATE reservations SET status = 'released', updated_at = now() WHERE order_id = $1 AND status = 'reserved' RETURNING product_id, quantity",
        [orderId],
      );
      const lines = rows.map((r) => ({ productId: r.product_id, quantity: r.quantity })).sort((a, b) => a.productId.localeCompare(b.productId));
      if (lines.length) {
        await q.query(
          `UPDATE stock s SET available = s.available + w.quantity, updated_at = now()
           FROM unnest($1::uuid[], $2::int[]) AS w(product_id, quantity) WHERE s.product_id = w.product_id`,
          [lines.map((l) => l.productId), lines.map((l) => l.quantity)],
        );
      }
      return lines;
    },

    /** Confirmed orders: their held lines become sales (only the reservations change), in one statement for any number of orders. */
    commitOrders: (orderIds: readonly string[]) =>
      q.query("UPDATE reservations SET status = 'committed', updated_at = now() WHERE order_id = ANY($1::uuid[]) AND status = 'reserved'", [orderIds]),

    /** Adds `delta` (may be negative); undefined when the result would go below zero. */
    async adjust(productId: string, delta: number, reason: string, actor: string): Promise<Stock | undefined> {
      let [row] = await q.query<StockRow>(
        "UPDATE stock SET available = available + $2, updated_at = now() WHERE product_id = $1 AND available + $2 >= 0 RETURNING *",
        [productId, delta],
      );
      if (!row && delta > 0) {
        // No row yet (or one appeared meanwhile): create it, or add to it.
        [row] = await q.query<StockRow>(
          "INSERT INTO stock (product_id, available) VALUES ($1, $2) ON CONFLICT (product_id) DO UPDATE SET available = stock.available + $2, updated_at = now() RETURNING *",
          [productId, delta],
        );
      }
      if (!row) return undefined;
      await q.query("INSERT INTO adjustments (product_id, delta, reason, actor) VALUES ($1, $2, $3, $4)", [productId, delta, reason, actor]);
      return this.get(productId);
    },

    /** Sets stock for products that have none yet (demo seed). */
    async seed(levels: { productId: string; available: number }[]): Promise<number> {
      let added = 0;
      for (const l of levels) {
        added += (await q.query("INSERT INTO stock (product_id, available) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING 1", [l.productId, l.available])).length;
      }
      return added;
    },
  };
}
