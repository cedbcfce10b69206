// A real PostgreSQL server for tests: the launcher's private server (launcher/postgres.ts) in a
// temporary folder on a free port, removed afterwards.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { findPostgresBin, startPostgres as startServer } from "../../launcher/postgres.js";
import { freePort } from "./ports.js";

export { findPostgresBin };

export interface TestPostgres {
  url(database: string): string;
  createDatabase(name: string): Promise<void>;
  stop(): Promise<void>;
}

/** `maxConnections`: raise it for many processes sharing the server (each service pools up to 10). */
export async function startPostgres({ maxConnections = 50 } = {}): Promise<TestPostgres> {
  const bin = findPostgresBin();
  if (!bin) throw new Error("PostgreSQL binaries not found: apt-get install postgresql");
  const dir = mkdtempSync(join(tmpdir(), "shopmesh-pg-"));
  const server = await startServer({ bin, dir, port: await freePort(), maxConnections });
  return {
    url: server.url,
    createDatabase: (name) => server.ensureDatabases([name]),
    async stop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
