// The PostgreSQL server of the benchmark: the launcher's private server (launcher/postgres.ts) in a
// temporary folder, with pg_stat_statements loaded so that the saga rows can count the SQL
// statements and transactions per order. Counting is off ("track = none": the extension then does
// nothing per statement) except while a saga step is measured.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { findPostgresBin, startPostgres, type PostgresServer } from "../launcher/postgres.js";
import { freePort } from "../test/support/ports.js";
import type { TestPostgres } from "../test/support/postgres.js";

export interface StatementCounts {
  /** Statements run in the services' databases (BEGIN and COMMIT included), by database. */
  statements: Record<string, number>;
  /** COMMITs (transactions that wrote or read in a BEGIN block), by database. */
  commits: Record<string, number>;
  /** The statements that took the most time, for the JSON (where an optimisation starts). */
  top: { database: string; query: string; calls: number; totalMs: number; rows: number }[];
}

export interface CountingPostgres extends TestPostgres {
  /** The postmaster's pid: its process tree is PostgreSQL's CPU and memory. */
  pid: number | undefined;
  /** Starts counting from zero. */
  startCounting(): Promise<void>;
  /** Stops counting and returns the counts since startCounting(). */
  stopCounting(): Promise<StatementCounts>;
}

export async function startCountingPostgres(): Promise<CountingPostgres> {
  const bin = findPostgresBin();
  if (!bin) throw new Error("PostgreSQL binaries not found: apt-get install postgresql (or BENCH_DATABASE=pglite)");
  const dir = mkdtempSync(join(tmpdir(), "shopmesh-bench-pg-"));
  const port = await freePort();
  const start = () => startPostgres({ bin, dir, port, maxConnections: 200 });
  const admin = async <T>(server: PostgresServer, work: (c: pg.Client) => Promise<T>): Promise<T> => {
    const client = new pg.Client({ connectionString: server.url("postgres") });
    await client.connect();
    try {
      return await work(client);
    } finally {
      await client.end();
    }
  };
  // shared_preload_libraries takes effect at a start: set it, then start again.
  let server = await start();
  await admin(server, (c) => c.query("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'"));
  await server.stop();
  server = await start();
  const track = (how: "top" | "none") => admin(server, async (c) => (await c.query(`ALTER SYSTEM SET pg_stat_statements.track = '${how}'`), await c.query("SELECT pg_reload_conf()")));
  await admin(server, (c) => c.query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements"));
  await track("none");
  return {
    pid: server.process.pid,
    url: server.url,
    createDatabase: (name) => server.ensureDatabases([name]),
    async startCounting() {
      await admin(server, (c) => c.query("SELECT pg_stat_statements_reset()"));
      await track("top");
    },
    async stopCounting() {
      await track("none");
      const { rows } = await admin(server, (c) =>
        c.query<{ datname: string; statements: string; commits: string }>(`
          SELECT d.datname, sum(s.calls) AS statements, coalesce(sum(s.calls) FILTER (WHERE upper(s.query) LIKE 'COMMIT%'), 0) AS commits
          FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
          WHERE d.datname LIKE 'shop\\_%' GROUP BY d.datname`),
      );
      const top = await admin(server, (c) =>
        c.query<{ database: string; query: string; calls: string; totalMs: number; rows: string }>(`
          SELECT d.datname AS database, left(s.query, 300) AS query, s.calls, s.total_exec_time AS "totalMs", s.rows
          FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid
          WHERE d.datname LIKE 'shop\\_%' ORDER BY s.total_exec_time DESC LIMIT 15`),
      );
      return {
        statements: Object.fromEntries(rows.map((r) => [r.datname, Number(r.statements)])),
        commits: Object.fromEntries(rows.map((r) => [r.datname, Number(r.commits)])),
        top: top.rows.map((r) => ({ ...r, calls: Number(r.calls), rows: Number(r.rows) })),
      };
    },
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
