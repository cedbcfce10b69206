// Order's SQL. Status changes are guarded UPDATEs (… WHERE status = 'pending'): an order leaves
// PENDING once, to exactly one terminal state, whatever order events arrive in.
import { create, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { OrderSchema, OrderStatus, ShippingAddressSchema, type Order, type ShippingAddress } from "../../gen/shop/order/v1/order_pb.js";
import type { Queryable } from "../../mesh/data/db.js";

interface OrderRow extends Record<string, unknown> {
  id: string;
  user_id: string;
  status: "pending" | "confirmed" | "cancelled";
  total_minor: string | number;
  currency: string;
  cancel_reason: string;
  shipping: JsonValue;
  request_hash: string | null;
  // stock_reserved and payment_captured (001_orders.sql) are no longer written or read: order.cancelled's
  // flags come from the event that cancels (see handlers.ts, cancel). Kept so that older replicas still run.
  payment_method_token: string;
  created_at: Date;
  updated_at: Date;
}

interface LineRow extends Record<string, unknown> {
  order_id: string;
  line_no: number;
  product_id: string;
  product_name: string;
  quantity: number;
  unit_price_minor: string | number;
}

export interface StoredOrder {
  order: Order;
  paymentMethodToken: string;
  requestHash: string | null;
}

const STATUS = { pending: OrderStatus.PENDING, confirmed: OrderStatus.CONFIRMED, cancelled: OrderStatus.CANCELLED } as const;
export const statusName = (s: OrderStatus) => (Object.keys(STATUS) as (keyof typeof STATUS)[]).find((k) => STATUS[k] === s);
export const isTerminal = (o: Order) => o.status === OrderStatus.CONFIRMED || o.status === OrderStatus.CANCELLED;

export interface NewOrder {
  id: string;
  userId: string;
  currency: string;
  lines: { productId: string; productName: string; quantity: number; unitPriceMinor: bigint }[];
  shipping: ShippingAddress;
  paymentMethodToken: string;
  idempotencyKey?: string;
  requestHash?: string;
}

/** Orders from their rows and their lines' rows (lines in line order). */
function toStored(rows: OrderRow[], lines: LineRow[]): StoredOrder[] {
  return rows.map((r) => {
    const currencyCode = r.currency.trim();
    const money = (minor: bigint) => ({ amountMinor: minor, currencyCode });
    return {
      order: create(OrderSchema, {
        id: r.id,
        userId: r.user_id,
        status: STATUS[r.status],
        total: money(BigInt(r.total_minor)),
        cancelReason: r.cancel_reason,
        shippingAddress: fromJson(ShippingAddressSchema, r.shipping),
        lines: lines
          .filter((l) => l.order_id === r.id)
          .map((l) => ({
            productId: l.product_id,
            productName: l.product_name,
            quantity: l.quantity,
            unitPrice: money(BigInt(l.unit_price_minor)),
            lineTotal: money(BigInt(l.unit_price_minor) * BigInt(l.quantity)),
          })),
        createTime: timestampFromDate(r.created_at),
        updateTime: timestampFromDate(r.updated_at),
      }),
      paymentMethodToken: r.payment_method_token,
      requestHash: r.request_hash,
    };
  });
}

const TRANSITION = `UPDATE orders SET status = $2, cancel_reason = $3, updated_at = now()
  WHERE id = ANY($1::uuid[]) AND status = 'pending' RETURNING *`;

export function createStore(q: Queryable) {
  const withLines = async (rows: OrderRow[]): Promise<StoredOrder[]> => {
    if (rows.length === 0) return [];
    const lines = await q.query<LineRow>("SELECT * FROM order_lines WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, line_no", [rows.map((r) => r.id)]);
    return toStored(rows, lines);
  };
  /**
   * The first order `sql` gives, with its lines, in one statement (GetOrder's read was two): each
   * row's lines come as JSON, whose bigints are JSON numbers, exact as prices are far below 2^53.
   */
  const one = async (sql: string, params: unknown[]) => {
    const rows = await q.query<OrderRow & { lines: LineRow[] | null }>(
      `WITH o AS (${sql}) SELECT o.*, (SELECT json_agg(l ORDER BY l.line_no) FROM order_lines l WHERE l.order_id = o.id) AS lines FROM o`,
      params,
    );
    return toStored(rows, rows.flatMap((r) => r.lines ?? []))[0];
  };

  return {
    byId: (id: string) => one("SELECT * FROM orders WHERE id = $1", [id]),
    byIdempotencyKey: (userId: string, key: string) => one("SELECT * FROM orders WHERE user_id = $1 AND idempotency_key = $2", [userId, key]),

    /** The order and all its lines in one statement, answered from what it returns (no re-read). */
    async insert(o: NewOrder): Promise<Order> {
      const total = o.lines.reduce((sum, l) => sum + l.unitPriceMinor * BigInt(l.quantity), 0n);
      const rows = await q.query<OrderRow & { lines: LineRow[] }>(
        `WITH inserted AS (
           INSERT INTO orders (id, user_id, status, total_minor, currency, shipping, idempotency_key, request_hash, payment_method_token)
           VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7, $8) RETURNING *),
         lines AS (
           INSERT INTO order_lines (order_id, line_no, product_id, product_name, quantity, unit_price_minor)
           SELECT $1::uuid, n, product_id, product_name, quantity, unit_price_minor
           FROM unnest($9::uuid[], $10::text[], $11::int[], $12::bigint[]) WITH ORDINALITY AS l(product_id, product_name, quantity, unit_price_minor, n)
           RETURNING *)
         SELECT inserted.*, (SELECT json_agg(lines ORDER BY line_no) FROM lines) AS lines FROM inserted`,
        [o.id, o.userId, total.toString(), o.currency, JSON.stringify(toJson(ShippingAddressSchema, o.shipping)), o.idempotencyKey ?? null, o.requestHash ?? null, o.paymentMethodToken,
          o.lines.map((l) => l.productId), o.lines.map((l) => l.productName), o.lines.map((l) => l.quantity), o.lines.map((l) => l.unitPriceMinor.toString())],
      );
      // json_agg gives the lines' bigints as JSON numbers: exact, as prices are far below 2^53 minor units.
      return toStored(rows, rows[0]!.lines)[0]!.order;
    },

    /** Newest first; `userId` undefined lists everyone's (admins, services). */
    async page(opts: { userId?: string; status?: string; beforeId?: string; limit: number }): Promise<Order[]> {
      const rows = await q.query<OrderRow>(
        `SELECT * FROM orders WHERE ($1::text IS NULL OR user_id = $1) AND ($2::text IS NULL OR status = $2) AND ($3::uuid IS NULL OR id < $3::uuid)
         ORDER BY id DESC LIMIT $4`,
        [opts.userId ?? null, opts.status ?? null, opts.beforeId ?? null, opts.limit],
      );
      return (await withLines(rows)).map((s) => s.order);
    },

    /**
     * PENDING → `to` for each of `ids` still PENDING; the orders that moved, without their lines.
     * One statement for any number of orders.
     */
    transitionAll: async (ids: readonly string[], to: "confirmed" | "cancelled", reason = "") =>
      toStored(await q.query<OrderRow>(TRANSITION, [ids, to, reason]), []),

    /** PENDING → `to`, with its lines; undefined when the order had already left PENDING. */
    transition: async (id: string, to: "confirmed" | "cancelled", reason = "") => one(TRANSITION, [[id], to, reason]),

    /** Ids of orders still PENDING `seconds` after they were placed, oldest first (by the database's clock). */
    overdue: async (seconds: number, limit: number) =>
      (await q.query<{ id: string }>(
        "SELECT id FROM orders WHERE status = 'pending' AND created_at < now() - $1 * interval '1 second' ORDER BY created_at LIMIT $2",
        [seconds, limit],
      )).map((r) => r.id),
  };
}
