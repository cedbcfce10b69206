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

/** Thrown inside a reservation transaction to roll every line back. */
export class Shortage extends Error {
  constructor(readonly line: Line) {
    super(`not enough stock of ${line.productId}`);
  }
}

export function createStore(q: Queryable) {
  // Serializes everything that happens to one order's reservation, until the transaction ends.
  const lockOrder = (orderId: string) => q.query("SELECT pg_advisory_xact_lock(hashtext($1))", [orderId]);
  return {
    async get(productId: string): Promise<Stock> {
      const [row] = await q.query<StockRow>("SELECT * FROM stock WHERE product_id = $1", [productId]);
      return toStock(row, productId);
    },

    async available(productIds: string[]): Promise<Map<string, number>> {
      const rows = await q.query<StockRow>("SELECT product_id, available FROM stock WHERE product_id = ANY($1::uuid[])", [productIds]);
      return new Map(rows.map((r) => [r.product_id, r.available]));
    },

    /**
     * Reserves every line or throws Shortage. Each line is one conditional UPDATE (never a read
     * then a write); lines go in product order so concurrent orders lock rows in the same order.
     */
    async reserve(orderId: string, lines: Line[]): Promise<void> {
      for (const line of [...lines].sort((a, b) => a.productId.localeCompare(b.productId))) {
        const updated = await q.query(
          "UPDATE stock SET available = available - $2, reserved = reserved + $2, updated_at = now() WHERE product_id = $1 AND available >= $2 RETURNING 1",
          [line.productId, line.quantity],
        );
        if (updated.length === 0) throw new Shortage(line);
        await q.query("INSERT INTO reservations (order_id, product_id, quantity, status) VALUES ($1, $2, $3, 'reserved')", [orderId, line.productId, line.quantity]);
      }
    },

    /**
     * Reserves an order's lines unless it was cancelled first. Holds the order's lock, so a
     * cancellation handled at the same moment waits and then sees (and releases) what we reserved.
     */
    async reserveOrder(orderId: string, lines: Line[]): Promise<"reserved" | "closed"> {
      await lockOrder(orderId);
      if ((await q.query("SELECT 1 FROM closed_orders WHERE order_id = $1", [orderId])).length > 0) return "closed";
      await this.reserve(orderId, lines);
      return "reserved";
    },

    /** Marks an order cancelled (a later order.created reserves nothing) and releases what it holds. */
    async cancelOrder(orderId: string): Promise<Line[]> {
      await lockOrder(orderId);
      await q.query("INSERT INTO closed_orders (order_id) VALUES ($1) ON CONFLICT DO NOTHING", [orderId]);
      return this.settle(orderId, "released");
    },

    /** Moves an order's held lines to `status`; returns them (none if nothing was held). */
    async settle(orderId: string, status: "committed" | "released"): Promise<Line[]> {
      const rows = await q.query<{ product_id: string; quantity: number }>(
        "UPDATE reservations SET status = $2, updated_at = now() WHERE order_id = $1 AND status = 'reserved' RETURNING product_id, quantity",
        [orderId, status],
      );
      for (const r of [...rows].sort((a, b) => a.product_id.localeCompare(b.product_id))) {
        await q.query(
          status === "released"
            ? "UPDATE stock SET available = available + $2, reserved = reserved - $2, updated_at = now() WHERE product_id = $1"
            : "UPDATE stock SET reserved = reserved - $2, updated_at = now() WHERE product_id = $1",
          [r.product_id, r.quantity],
        );
      }
      return rows.map((r) => ({ productId: r.product_id, quantity: r.quantity }));
    },

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
      return toStock(row, productId);
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
