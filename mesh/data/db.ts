// PostgreSQL behind one small interface. With DATABASE_URL a pg pool talks to a real server;
// without it, PGlite (Postgres compiled to WebAssembly) runs embedded with its data in a folder,
// so a fresh machine needs no database server. Both speak the same SQL.
import { createHash } from "node:crypto";
import { readdir, readFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { projectRoot } from "../project-root.js";
import pg from "pg";
import type { PGlite } from "@electric-sql/pglite";

export type Row = Record<string, unknown>;

export interface Queryable {
  query<T extends Row = Row>(sql: string, params?: unknown[]): Promise<T[]>;
}

/**
 * A transaction in progress. Work registered with `atCommit` runs at its end: `before` as its last
 * statements (so several writes of one kind can become one multi-row statement), `after` once it
 * has committed (so what follows a commit, such as publishing its events, never runs for a
 * rollback).
 */
export interface Tx extends Queryable {
  /** The database this transaction runs on. */
  readonly db: Db;
  /** The transaction's registration under `key`, made by `make` on first use. */
  atCommit<H extends CommitHooks>(key: symbol, make: () => H): H;
}

export interface CommitHooks {
  before?(q: Queryable): Promise<void>;
  after?(): void;
}

export interface Db extends Queryable {
  /** Runs `fn` in one transaction: committed if it resolves, rolled back if it throws. */
  tx<T>(fn: (q: Tx) => Promise<T>): Promise<T>;
  /** True while the database answers (readiness). */
  ping(): Promise<boolean>;
  close(): Promise<void>;
  readonly kind: "postgres" | "pglite";
}

export interface DbOptions {
  /** postgres://… for a server; undefined for embedded PGlite. */
  url?: string;
  /** Where PGlite keeps its files; "memory://" keeps it in memory (tests). */
  dataDir?: string;
  /** Upper bound for any one statement (and for getting a connection). */
  statementTimeoutMs?: number;
}

export async function openDb(opts: DbOptions): Promise<Db> {
  return opts.url ? openPostgres(opts.url, opts.statementTimeoutMs ?? 5_000) : openPglite(opts.dataDir);
}

/**
 * Parameterized statements are prepared once per connection under a name derived from their text,
 * so PostgreSQL parses and plans each of them once, not on every call: about a third of the server's
 * CPU per saga transaction (A/B of pg unnamed against named statements). The texts are the code's
 * own, a few dozen; past MAX_NAMED distinct texts the rest run unnamed, so no caller can make a
 * connection hold statements without bound.
 */
const statementNames = new Map<string, string>();
const MAX_NAMED = 500;
function statementName(sql: string): string | undefined {
  let name = statementNames.get(sql);
  if (name === undefined && statementNames.size < MAX_NAMED) {
    name = `s_${createHash("sha1").update(sql).digest("base64url")}`;
    statementNames.set(sql, name);
  }
  return name;
}

/**
 * "cached plan must not change result type" (SQLSTATE 0A000): a migration changed a table under a
 * statement this connection prepared (a `RETURNING *` after ADD COLUMN, while the old version still
 * runs). The statement fails once per connection; the connection is then replaced.
 */
const isStalePlan = (err: unknown): boolean => (err as { code?: string } | null)?.code === "0A000";

/** Connections one process holds at most; a deployment's budget is replicas × this (deploy/k8s). */
export const POOL_SIZE = 10;

function openPostgres(url: string, statementTimeoutMs: number): Db {
  const pool = new pg.Pool({
    connectionString: url,
    max: POOL_SIZE,
    connectionTimeoutMillis: statementTimeoutMs,
    statement_timeout: statementTimeoutMs,
    idle_in_transaction_session_timeout: statementTimeoutMs * 2,
  });
  // An idle client losing its connection must not crash the process; the pool replaces it.
  pool.on("error", () => {});
  const run = (c: pg.Pool | pg.PoolClient): Queryable => ({
    async query<T extends Row>(sql: string, params?: unknown[]) {
      return (await c.query<T>(params ? { name: statementName(sql), text: sql, values: params } : sql)).rows;
    },
  });
  const db: Db = {
    kind: "postgres",
    ...run(pool),
    async tx(fn) {
      const client = await pool.connect();
      const ending = new CommitWork(db);
      let result: Awaited<ReturnType<typeof fn>>;
      let failure: unknown;
      try {
        await client.query("BEGIN");
        const q = ending.tx(run(client));
        result = await fn(q);
        await ending.before(q);
        await client.query("COMMIT");
      } catch (err) {
        await client.query("ROLLBACK").catch(() => {});
        failure = err;
        throw err;
      } finally {
        // A connection whose prepared statement went stale is closed, so that its replacement prepares afresh.
        client.release(isStalePlan(failure) ? (failure as Error) : undefined);
      }
      ending.after();
      return result;
    },
    ping: () => pool.query("SELECT 1").then(() => true, () => false),
    close: () => pool.end(),
  };
  return db;
}

async function openPglite(dataDir?: string): Promise<Db> {
  if (dataDir && !dataDir.startsWith("memory://")) await mkdir(dataDir, { recursive: true });
  // Loaded only when used: a service on a PostgreSQL server does not carry the WebAssembly module.
  const { PGlite } = await import("@electric-sql/pglite");
  const db = await PGlite.create(dataDir);
  const run = (c: Pick<PGlite, "query">): Queryable => ({
    async query<T extends Row>(sql: string, params?: unknown[]) {
      return (await c.query<T>(sql, params)).rows;
    },
  });
  const self: Db = {
    kind: "pglite",
    ...run(db),
    async tx(fn) {
      const ending = new CommitWork(self);
      const result = await db.transaction(async (t) => {
        const q = ending.tx(run(t));
        const value = await fn(q);
        await ending.before(q);
        return value;
      });
      ending.after();
      return result;
    },
    ping: () => db.query("SELECT 1").then(() => true, () => false),
    close: () => db.close(),
  };
  return self;
}

/** What a transaction's `atCommit` registrations ask of its end. */
class CommitWork {
  private readonly hooks = new Map<symbol, CommitHooks>();

  constructor(private readonly db: Db) {}

  tx(q: Queryable): Tx {
    const atCommit = <H extends CommitHooks>(key: symbol, make: () => H): H => {
      if (!this.hooks.has(key)) this.hooks.set(key, make());
      return this.hooks.get(key) as H;
    };
    return { db: this.db, query: q.query, atCommit };
  }

  async before(q: Queryable): Promise<void> {
    for (const hooks of this.hooks.values()) await hooks.before?.(q);
  }

  /** After the commit: hooks must not throw (the transaction has committed; the caller must hear so). */
  after(): void {
    for (const hooks of this.hooks.values()) hooks.after?.();
  }
}

/**
 * Applies the .sql files in `dir` in name order, each once, each in its own transaction, recorded
 * in schema_migrations as `<prefix><file>`. An advisory lock makes replicas starting together
 * apply them once.
 */
export async function migrate(db: Db, dir: string, prefix = ""): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith(".sql")).sort();
  const lock = (q: Queryable) => q.query("SELECT pg_advisory_xact_lock(7301)");
  await db.tx(async (q) => {
    await lock(q); // CREATE TABLE IF NOT EXISTS itself races between sessions
    await q.query("CREATE TABLE IF NOT EXISTS schema_migrations (version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
  });
  const applied: string[] = [];
  for (const file of files) {
    const sql = await readFile(join(dir, file), "utf8");
    const version = prefix + file;
    const done = await db.tx(async (q) => {
      await lock(q);
      if ((await q.query("SELECT 1 FROM schema_migrations WHERE version = $1", [version])).length > 0) return false;
      for (const statement of splitStatements(sql)) await q.query(statement);
      await q.query("INSERT INTO schema_migrations (version) VALUES ($1)", [version]);
      return true;
    });
    if (done) applied.push(version);
  }
  return applied;
}

/** Splits a migration on semicolons that end a line (our migrations keep one statement per `;`). */
function splitStatements(sql: string): string[] {
  return sql
    .split(/;\s*$/m)
    .map((s) => s.replace(/^\s*--.*$/gm, "").trim())
    .filter(Boolean);
}

/** The runtime's own tables (outbox, inbox), applied to every service's database before its own. */
export const meshMigrations = join(projectRoot, "mesh", "data", "migrations"); // the source folder: this module may be bundled into a service

/** True when `err` is a PostgreSQL unique-violation (SQLSTATE 23505), from pg or PGlite. */
export const isUniqueViolation = (err: unknown): boolean => (err as { code?: string } | null)?.code === "23505";
