// A real PostgreSQL server for tests, started from the installed binaries (Debian's postgresql
// package) in a temporary folder on a free port, and removed afterwards. PostgreSQL refuses to
// run as root, so as root it runs as the `postgres` system user.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, rmSync, chownSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort } from "./ports.js";

export function findPostgresBin(): string | undefined {
  const candidates = ["/usr/lib/postgresql"].flatMap((root) =>
    existsSync(root) ? readdirSync(root).sort((a, b) => Number(b) - Number(a)).map((v) => join(root, v, "bin")) : [],
  );
  return candidates.find((dir) => existsSync(join(dir, "initdb")) && existsSync(join(dir, "postgres")));
}

export interface TestPostgres {
  url(database: string): string;
  createDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
}

/** `maxConnections`: raise it for many processes sharing the server (each service pools up to 10). */
export async function startPostgres({ maxConnections = 50 } = {}): Promise<TestPostgres> {
  const bin = findPostgresBin();
  if (!bin) throw new Error("PostgreSQL binaries not found: apt-get install postgresql");
  const asRoot = process.getuid?.() === 0;
  const dir = mkdtempSync(join(tmpdir(), "shopmesh-pg-"));
  const uid = asRoot ? Number(execFileSync("id", ["-u", "postgres"]).toString()) : undefined;
  const gid = asRoot ? Number(execFileSync("id", ["-g", "postgres"]).toString()) : undefined;
  if (uid !== undefined && gid !== undefined) chownSync(dir, uid, gid);
  const data = join(dir, "data");
  const run = { uid, gid, stdio: "pipe" as const };
  execFileSync(join(bin, "initdb"), ["-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"], run);
  const port = await freePort();
  const server: ChildProcess = spawn(
    join(bin, "postgres"),
    ["-D", data, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", `max_connections=${maxConnections}`],
    run,
  );
  let log = "";
  server.stderr?.on("data", (d) => (log += d));
  const deadline = Date.now() + 20_000;
  while (!log.includes("ready to accept connections")) {
    if (server.exitCode !== null || Date.now() > deadline) throw new Error(`postgres did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const url = (database: string) => `postgresql://postgres@127.0.0.1:${port}/${database}`;
  return {
    url,
    async createDatabase(name) {
      const pg = (await import("pg")).default;
      const client = new pg.Client({ connectionString: url("postgres") });
      await client.connect();
      await client.query(`CREATE DATABASE ${name}`);
      await client.end();
    },
    async stop() {
      server.kill("SIGINT"); // fast shutdown
      await new Promise((r) => server.once("exit", r));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
