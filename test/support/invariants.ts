// The shop's invariants, read with SQL from each service's own database once the saga has run:
// every order terminal, stock never negative and never lost, at most one capture per order, a
// cancelled order never left charged, no payment pending for a decided order.
import pg from "pg";

export interface ShopFigures {
  pending: number;
  confirmed: number;
  cancelled: number;
  /** Payments whose processor was asked more than once (other than the card that fails its first try). */
  chargedAgain: number;
}

/** Violations by kind, each with a few example ids. */
export type Violations = Map<string, string[]>;

export const violationCount = (v: Violations) => [...v.values()].reduce((n, list) => n + list.length, 0);

export function describeViolations(v: Violations, examples = 3): string[] {
  return [...v].map(([kind, ids]) => `${kind}: ${ids.length} (e.g. ${ids.slice(0, examples).join(", ")})`);
}

async function rows<T extends pg.QueryResultRow>(url: string, sql: string): Promise<T[]> {
  const client = new pg.Client({ connectionString: url });
  client.on("error", () => {});
  await client.connect();
  try {
    return (await client.query<T>(sql)).rows;
  } finally {
    await client.end();
  }
}

/** Stock per product as inventory holds it now: the total the run starts from. */
export async function stockTotals(inventoryUrl: string): Promise<Map<string, number>> {
  const stock = await rows<{ product_id: string; total: number }>(inventoryUrl, "SELECT product_id, available + reserved AS total FROM stock_levels");
  return new Map(stock.map((s) => [s.product_id, s.total]));
}

/**
 * Checks every invariant. `startTotals` is stockTotals() before the first order (available +
 * reserved per product); units leave only by orders that were confirmed.
 */
export async function checkShop(url: (service: "order" | "inventory" | "payment") => string, startTotals: Map<string, number>): Promise<{ figures: ShopFigures; violations: Violations }> {
  const violations: Violations = new Map();
  const add = (kind: string, id: string) => violations.set(kind, [...(violations.get(kind) ?? []), id]);

  const orders = new Map((await rows<{ id: string; status: string }>(url("order"), "SELECT id, status FROM orders")).map((o) => [o.id, o.status]));
  const figures: ShopFigures = { pending: 0, confirmed: 0, cancelled: 0, chargedAgain: 0 };
  for (const [id, status] of orders) {
    figures[status as "pending" | "confirmed" | "cancelled"]++;
    if (status === "pending") add("order not terminal", id);
  }

  const stock = await rows<{ product_id: string; available: number; reserved: number }>(url("inventory"), "SELECT product_id, available, reserved FROM stock_levels");
  const reservations = await rows<{ order_id: string; product_id: string; quantity: number; status: string }>(url("inventory"), "SELECT order_id, product_id, quantity, status FROM reservations");
  const held = new Map<string, number>(); // product → units reserved by orders not cancelled
  const committed = new Map<string, number>();
  const committedOrders = new Set<string>();
  for (const r of reservations) {
    const order = orders.get(r.order_id);
    if (r.status === "reserved" && order !== "cancelled") held.set(r.product_id, (held.get(r.product_id) ?? 0) + r.quantity);
    if (r.status === "committed") {
      committed.set(r.product_id, (committed.get(r.product_id) ?? 0) + r.quantity);
      committedOrders.add(r.order_id);
    }
    if (order === "cancelled" && r.status !== "released") add(`stock still ${r.status} for a cancelled order`, r.order_id);
    if (order === "confirmed" && r.status !== "committed") add(`stock ${r.status}, not committed, for a confirmed order`, r.order_id);
  }
  for (const s of stock) {
    if (s.available < 0 || s.reserved < 0) add("negative stock", s.product_id);
    if (s.reserved !== (held.get(s.product_id) ?? 0)) add(`reserved stock ≠ open reservations of orders not cancelled`, `${s.product_id} (${s.reserved} vs ${held.get(s.product_id) ?? 0})`);
    const start = startTotals.get(s.product_id);
    const now = s.available + s.reserved + (committed.get(s.product_id) ?? 0);
    if (start !== undefined && now !== start) add("stock units created or lost", `${s.product_id} (${start} → ${now})`);
  }
  for (const [id, status] of orders) if (status === "confirmed" && !committedOrders.has(id)) add("confirmed order without committed stock", id);

  const payments = await rows<{ order_id: string; status: string; attempts: number; card_last4: string; user_id: string }>(
    url("payment"),
    "SELECT order_id, status, attempts, card_last4, user_id FROM payments",
  );
  const paymentOf = new Map(payments.map((p) => [p.order_id, p]));
  for (const [id, status] of orders) {
    const payment = paymentOf.get(id);
    if (status === "confirmed" && payment?.status !== "captured") add(`confirmed order with payment ${payment?.status ?? "missing"}`, id);
    if (status === "cancelled" && payment?.status === "captured") add("cancelled order left captured (no refund)", id);
    if (status !== "pending" && (payment?.status === "pending" || payment?.status === "charging")) add(`payment ${payment.status} for a terminal order`, id);
  }
  for (const p of payments) if (p.attempts > 1 && p.card_last4 !== "0119") figures.chargedAgain++;
  return { figures, violations };
}
