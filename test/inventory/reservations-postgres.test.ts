// The reservation guarantee under real concurrency: 50 transactions on a PostgreSQL pool, each
// reserving one unit of a stock of 10. The database, not the code, keeps stock from going negative.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { v7 as uuidv7 } from "uuid";
import { migrate, openDb, type Db, type Queryable } from "../../mesh/data/db.js";
import { createStore, type Line } from "../../services/inventory/store.js";
import { startPostgres, type TestPostgres } from "../support/postgres.js";

let pg: TestPostgres;
let db: Db;
beforeAll(async () => {
  pg = await startPostgres();
  await pg.createDatabase("inventory");
  db = await openDb({ url: pg.url("inventory") });
  await migrate(db, fileURLToPath(new URL("../../services/inventory/migrations", import.meta.url)));
});
afterAll(async () => {
  await db?.close();
  await pg?.stop();
});

/** One order's reservation: its shortages (none: reserved) or "closed". */
const reserveOne = async (q: Queryable, orderId: string, lines: Line[]) => (await createStore(q).reserveOrders([{ orderId, lines }])).get(orderId)!;

describe("reservations on PostgreSQL", () => {
  it("let exactly 10 of 50 concurrent orders take a stock of 10, all lines or none", async () => {
    const [scarce, plenty] = [uuidv7(), uuidv7()];
    await db.tx((q) => createStore(q).seed([{ productId: scarce, available: 10 }, { productId: plenty, available: 1000 }]));
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        db
          .tx((q) => reserveOne(q, uuidv7(), [{ productId: plenty, quantity: 2 }, { productId: scarce, quantity: 1 }]))
          .then((outcome) => (outcome.length ? "rejected" : "reserved")),
      ),
    );
    expect(results.filter((r) => r === "reserved")).toHaveLength(10);
    const stock = await db.query<{ product_id: string; available: number; reserved: number }>("SELECT product_id, available, reserved FROM stock_levels");
    expect(stock.find((s) => s.product_id === scarce)).toMatchObject({ available: 0, reserved: 10 });
    expect(stock.find((s) => s.product_id === plenty)).toMatchObject({ available: 980, reserved: 20 }); // rejected orders kept nothing
  });

  it("reserve a batch of orders in a few statements exactly as one by one in the batch's order", async () => {
    const [scarce, plenty] = [uuidv7(), uuidv7()];
    const [a, b, c, d, e] = [uuidv7(), uuidv7(), uuidv7(), uuidv7(), uuidv7()];
    await db.tx((q) => createStore(q).seed([{ productId: scarce, available: 3 }, { productId: plenty, available: 100 }]));
    await db.tx((q) => createStore(q).cancelOrder(d)); // cancelled before its order.created is handled
    const outcomes = await db.tx((q) => createStore(q).reserveOrders([
      { orderId: a, lines: [{ productId: scarce, quantity: 2 }, { productId: plenty, quantity: 1 }] },
      { orderId: b, lines: [{ productId: scarce, quantity: 2 }, { productId: plenty, quantity: 1 }] }, // only 1 scarce left: none of it
      { orderId: c, lines: [{ productId: scarce, quantity: 1 }, { productId: plenty, quantity: 5 }] },
      { orderId: d, lines: [{ productId: scarce, quantity: 1 }] },
      { orderId: e, lines: [{ productId: plenty, quantity: 1 }, { productId: plenty, quantity: 2 }] }, // one product on two lines
    ]));
    expect(Object.fromEntries(outcomes)).toEqual({
      [a]: [], [b]: [{ productId: scarce, requestedQuantity: 2, availableQuantity: 1 }], [c]: [], [d]: "closed", [e]: [],
    });
    const levels = await db.query("SELECT product_id, available, reserved FROM stock_levels WHERE product_id = ANY($1::uuid[]) ORDER BY available", [[scarce, plenty]]);
    expect(levels).toEqual([{ product_id: scarce, available: 0, reserved: 3 }, { product_id: plenty, available: 91, reserved: 9 }]);
    const held = await db.query("SELECT order_id, product_id, quantity FROM reservations WHERE order_id = ANY($1::uuid[]) ORDER BY order_id, product_id", [[a, b, c, d, e]]);
    expect(held).toEqual([
      { order_id: a, product_id: scarce, quantity: 2 }, { order_id: a, product_id: plenty, quantity: 1 },
      { order_id: c, product_id: scarce, quantity: 1 }, { order_id: c, product_id: plenty, quantity: 5 },
      { order_id: e, product_id: plenty, quantity: 3 },
    ].sort((x, y) => x.order_id.localeCompare(y.order_id) || x.product_id.localeCompare(y.product_id)));
  });

  it("release a reservation whose cancellation was handled while it was being made", async () => {
    const [product, orderId] = [uuidv7(), uuidv7()];
    await db.tx((q) => createStore(q).seed([{ productId: product, available: 10 }]));
    let finishReserving!: () => void;
    const reserving = db.tx(async (q) => {
      const outcome = await reserveOne(q, orderId, [{ productId: product, quantity: 3 }]);
      await new Promise<void>((resolve) => (finishReserving = resolve)); // still uncommitted...
      return outcome;
    });
    await new Promise((r) => setTimeout(r, 100));
    const cancelling = db.tx((q) => createStore(q).cancelOrder(orderId)); // ...when the cancellation arrives
    await new Promise((r) => setTimeout(r, 100));
    finishReserving();
    expect(await reserving).toEqual([]); // reserved: no shortages
    expect(await cancelling).toEqual([{ productId: product, quantity: 3 }]); // it waited, then released
    expect(await db.query("SELECT available, reserved FROM stock_levels WHERE product_id = $1", [product])).toEqual([{ available: 10, reserved: 0 }]);
    // And an order.created arriving after its cancellation reserves nothing.
    expect(await db.tx((q) => reserveOne(q, orderId, [{ productId: product, quantity: 1 }]))).toBe("closed");
  });
});
