// Parameterized statements are prepared once per connection (mesh/data/db.ts), and a connection
// whose prepared statement a migration made stale is replaced, not kept failing.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openDb, POOL_SIZE, type Db } from "../../mesh/data/db.js";
import { startPostgres, type TestPostgres } from "../support/postgres.js";

let pg: TestPostgres;
let db: Db;
beforeAll(async () => {
  pg = await startPostgres();
  await pg.createDatabase("prepared");
  db = await openDb({ url: pg.url("prepared") });
  await db.query("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)");
  await db.query("INSERT INTO items VALUES (1, 'one'), (2, 'two')");
});
afterAll(async () => {
  await db?.close();
  await pg?.stop();
});

const byId = "SELECT * FROM items WHERE id = $1";
/** The statements the connection of this transaction has prepared (the query itself has no parameters, so is not one). */
const preparedHere = (q: { query: Db["query"] }) =>
  q.query<{ name: string; statement: string }>("SELECT name, statement FROM pg_prepared_statements");

describe("prepared statements", () => {
  it("prepares a parameterized statement once per connection, under one name", async () => {
    const seen = await db.tx(async (q) => {
      for (let i = 0; i < 5; i++) expect(await q.query(byId, [1])).toEqual([{ id: 1, name: "one" }]);
      return preparedHere(q);
    });
    const mine = seen.filter((s) => s.statement === byId);
    expect(mine).toHaveLength(1);
    expect(mine[0]!.name).toMatch(/^s_/);
  });

  it("replaces a connection whose statement a migration made stale, and then answers with the new columns", async () => {
    // Every connection of the pool prepares the statement.
    await Promise.all(Array.from({ length: POOL_SIZE }, () => db.tx(async (q) => {
      await q.query(byId, [2]);
      await q.query("SELECT pg_sleep(0.05)");
    })));
    await db.query("ALTER TABLE items ADD COLUMN price int NOT NULL DEFAULT 7");

    let failures = 0;
    const answers: unknown[] = [];
    for (let i = 0; i < 4 * POOL_SIZE; i++) {
      const run = i % 2 ? db.query(byId, [2]) : db.tx((q) => q.query(byId, [2]));
      try {
        answers.push(...(await run));
      } catch (err) {
        expect((err as { code?: string }).code).toBe("0A000"); // cached plan must not change result type
        failures++;
      }
    }
    expect(failures).toBeLessThanOrEqual(POOL_SIZE); // each stale connection fails once at most
    expect(answers.length).toBe(4 * POOL_SIZE - failures);
    expect(answers.at(-1)).toEqual({ id: 2, name: "two", price: 7 });
  });
});
