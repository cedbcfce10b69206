// The reservation guarantee under real concurrency: 50 transactions on a PostgreSQL pool, each
// reserving one unit of a stock of 10. The database, not the code, keeps stock from going negative.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fileURLToPath } from "node:url";
import { v7 as uuidv7 } from "uuid";
import { migrate, openDb, type Db } from "../../mesh/data/db.js";
import { createStore } from "../../services/inventory/store.js";
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

describe("reservations on PostgreSQL", () => {
  it("let exactly 10 of 50 concurrent orders take a stock of 10, all lines or none", async () => {
    const [scarce, plenty] = [uuidv7(), uuidv7()];
    await db.tx((q) => createStore(q).seed([{ productId: scarce, available: 10 }, { productId: plenty, available: 1000 }]));
    const results = await Promise.all(
      Array.from({ length: 50 }, () =>
        db
          .tx((q) => createStore(q).reserve(uuidv7(), [{ productId: plenty, quantity: 2 }, { productId: scarce, quantity: 1 }]))
          .then((shortages) => (shortages.length ? "rejected" : "reserved")),
      ),
    );
    expect(results.filter((r) => r === "reserved")).toHaveLength(10);
    const stock = await db.query<{ product_id: string; available: number; reserved: number }>("SELECT product_id, available, reserved FROM stock_levels");
    expect(stock.find((s) => s.product_id === scarce)).toMatchObject({ available: 0, reserved: 10 });
    expect(stock.find((s) => s.product_id === plenty)).toMatchObject({ available: 980, reserved: 20 }); // rejected orders kept nothing
  });

  it("release a reservation whose cancellation was handled while it was being made", async () => {
    const [product, orderId] = [uuidv7(), uuidv7()];
    await db.tx((q) => createStore(q).seed([{ productId: product, available: 10 }]));
    let finishReserving!: () => void;
    const reserving = db.tx(async (q) => {
      const outcome = await createStore(q).reserveOrder(orderId, [{ productId: product, quantity: 3 }]);
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
    expect(await db.tx((q) => createStore(q).reserveOrder(orderId, [{ productId: product, quantity: 1 }]))).toBe("closed");
  });
});
