// A private PostgreSQL server from the installed binaries (Debian's postgresql package): one
// cluster in a folder of ours, listening on loopback only, one database per service. `npm start`
// keeps it under .data/postgres; tests put it in a temporary folder. PostgreSQL refuses to run as
// root, so as root it runs as the `postgres` system user.
import { execFileSync, spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chownSync, existsSync, mkdirSync, readdirSync } from "node:fs";
import { join } from "node:path";
import pg from "pg";

export function findPostgresBin(): string | undefined {
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root) ? readdirSync(root).sort((a, b) => Number(b) - Number(a)) : [];
  return versions.map((v) => join(root, v, "bin")).find((dir) => existsSync(join(dir, "initdb")) && existsSync(join(dir, "postgres")));
}

export interface PostgresServer {
  port: number;
  url(database: string): string;
  /** Creates the databases that do not exist yet. */
  ensureDatabases(names: readonly string[]): Promise<void>;
  /** Fast shutdown: open transactions are rolled back, the data stays. */
  stop(): Promise<void>;
  readonly process: ChildProcess;
}

export interface PostgresOptions {
  bin: string;
  /** The cluster's folder: made (initdb) when it holds no cluster yet. */
  dir: string;
  port: number;
  /** Each service's pool holds up to 10 connections. */
  maxConnections?: number;
  /** Lines PostgreSQL writes to stderr (its log). */
  onLog?(line: string): void;
}

function runAs(): { uid?: number; gid?: number } {
  if (process.getuid?.() !== 0) return {};
  return { uid: Number(execFileSync("id", ["-u", "postgres"]).toString()), gid: Number(execFileSync("id", ["-g", "postgres"]).toString()) };
}

/**
 * The URL of `database` on our server at `port` (trust authentication on loopback): through its
 * Unix socket in `socketDir` where there is one, which costs a third less CPU per statement on
 * both ends than TCP on loopback (A/B of 5-statement transactions, pg 8.23); else over TCP (the
 * socket's path is too long for the kernel when the checkout lies deep, and PostgreSQL then makes none).
 */
export function postgresUrl(port: number, database: string, socketDir?: string): string {
  if (socketDir && existsSync(join(socketDir, `.s.PGSQL.${port}`))) return `postgresql://postgres@localhost/${database}?host=${encodeURIComponent(socketDir)}&port=${port}`;
  return `postgresql://postgres@127.0.0.1:${port}/${database}`;
}

/** Creates the databases in `names` that do not exist yet, connected to `adminUrl`. */
export async function ensureDatabases(adminUrl: string, names: readonly string[]): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl, connectionTimeoutMillis: 5_000 });
  await client.connect();
  try {
    const existing = new Set((await client.query<{ datname: string }>("SELECT datname FROM pg_database")).rows.map((r) => r.datname));
    for (const name of names) if (!existing.has(name)) await client.query(`CREATE DATABASE "${name}"`);
  } finally {
    await client.end();
  }
}

/** The postgres system user cannot reach the cluster's folder (a checkout under /root, say). */
export class PostgresAccessError extends Error {}

/** Runs a PostgreSQL tool to its end, in its own process group (a Ctrl-C is the launcher's to handle). */
function runTool(bin: string, args: string[], user: { uid?: number; gid?: number }): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { ...user, stdio: ["ignore", "ignore", "pipe"], detached: true });
    let err = "";
    child.stderr!.setEncoding("utf8").on("data", (d: string) => (err += d));
    child.once("error", reject);
    child.once("exit", (code, signal) => (code === 0 ? resolve() : reject(new Error(`${bin} ${signal ?? `exited ${code}`}: ${err.trim()}`))));
  });
}

/** Starts the cluster in `dir` (making it first if needed) and resolves once it accepts connections. */
export async function startPostgres({ bin, dir, port, maxConnections = 100, onLog }: PostgresOptions): Promise<PostgresServer> {
  const user = runAs();
  mkdirSync(dir, { recursive: true });
  if (user.uid !== undefined) {
    chownSync(dir, user.uid, user.gid!);
    if (spawnSync("test", ["-w", dir, "-a", "-x", dir], user).status !== 0) {
      throw new PostgresAccessError(`PostgreSQL runs as the postgres user, which cannot reach ${dir} (a folder above it is closed to other users)`);
    }
  }
  const data = join(dir, "data");
  if (!existsSync(join(data, "PG_VERSION"))) {
    // --no-sync: a development cluster; a crash of the machine may lose it, a crash of a process does not.
    await runTool(join(bin, "initdb"), ["-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"], user);
  }
  const server = spawn(
    join(bin, "postgres"),
    ["-D", data, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", `max_connections=${maxConnections}`, "-c", "fsync=off", "-c", "synchronous_commit=off"],
    // Its own process group: Ctrl-C in a terminal must not stop it before the services have drained.
    { ...user, stdio: ["ignore", "ignore", "pipe"], detached: true },
  );
  let log = "";
  const ready = new Promise<void>((resolve, reject) => {
    server.stderr!.setEncoding("utf8").on("data", (chunk: string) => {
      if (log.length < 65_536) log += chunk;
      for (const line of chunk.split("\n")) if (line) onLog?.(line);
      if (log.includes("ready to accept connections")) resolve();
    });
    server.once("exit", (code) => reject(new Error(`postgres exited with code ${code} while starting:\n${log.trim()}`)));
  });
  await ready;
  const url = (database: string) => postgresUrl(port, database, dir);
  return {
    port,
    url,
    process: server,
    ensureDatabases: (names) => ensureDatabases(url("postgres"), names),
    async stop() {
      if (server.exitCode !== null || server.signalCode !== null) return;
      const exited = new Promise((resolve) => server.once("exit", resolve));
      server.kill("SIGINT");
      await exited;
    },
  };
}
