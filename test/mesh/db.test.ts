// Migrations against both databases: applied once, in order, also when replicas start together.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { migrate, openDb, isUniqueViolation, type Db } from "../../mesh/data/db.js";
import { startPostgres, type TestPostgres } from "../support/postgres.js";

let migrations: string;
beforeAll(async () => {
  migrations = await mkdtemp(join(tmpdir(), "shopmesh-migrations-"));
  await writeFile(join(migrations, "001_items.sql"), "-- items\nCREATE TABLE items (id int PRIMARY KEY);\nINSERT INTO items VALUES (1);\n");
  await writeFile(join(migrations, "002_more.sql"), "INSERT INTO items VALUES (2);\n");
});

async function checkMigrations(open: () => Promise<Db>) {
  const dbs = await Promise.all([open(), open(), open(), open()]);
  const applied = await Promise.all(dbs.map((db) => migrate(db, migrations)));
  expect(applied.flat().sort()).toEqual(["001_items.sql", "002_more.sql"]); // each once, across replicas
  expect(await dbs[0]!.query("SELECT id FROM items ORDER BY id")).toEqual([{ id: 1 }, { id: 2 }]);
  expect(await migrate(dbs[1]!, migrations)).toEqual([]);
  const err = await dbs[2]!.query("INSERT INTO items VALUES (1)").catch((e) => e);
  expect(isUniqueViolation(err)).toBe(true);
  await expect(dbs[3]!.tx(async (q) => {
    await q.query("INSERT INTO items VALUES (3)");
    throw new Error("roll back");
  })).rejects.toThrow("roll back");
  expect(await dbs[0]!.query("SELECT count(*)::int AS n FROM items")).toEqual([{ n: 2 }]);
  await Promise.all(dbs.map((db) => db.close()));
}

describe("PostgreSQL", () => {
  let pg: TestPostgres;
  beforeAll(async () => {
    pg = await startPostgres();
    await pg.createDatabase("migrations");
  });
  afterAll(() => pg?.stop());

  it("applies each migration once when four replicas start together", () =>
    checkMigrations(() => openDb({ url: pg.url("migrations") })));
});

describe("PGlite", () => {
  it("applies each migration once, and transactions roll back", async () => {
    const dir = await mkdtemp(join(tmpdir(), "shopmesh-pglite-"));
    const db = await openDb({ dataDir: dir });
    // PGlite is one embedded database per process: "replicas" share the one handle.
    await checkMigrations(async () => ({ ...db, close: async () => {} }));
    await db.close();
  });
});
