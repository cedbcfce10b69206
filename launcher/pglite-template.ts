// Without a PostgreSQL server each service embeds PGlite, and a new PGlite database runs initdb
// in WebAssembly: ~6 s of CPU and ~800 MiB each, six at once on a first start. A copy of a freshly
// made, cleanly closed cluster opens like an existing one (~1.3 s, ~300 MiB), so the launcher makes
// one such cluster, once, in a short-lived process, and gives each new service a copy of it.
import { execFile } from "node:child_process";
import { cpSync, existsSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";

/** Seeds `<root>/.data/<service>/pglite` from the template for each service that has none yet. */
export async function seedPgliteFolders(root: string, services: readonly string[]): Promise<void> {
  const missing = services.filter((name) => !existsSync(join(root, ".data", name, "pglite", "PG_VERSION")));
  if (missing.length === 0) return;
  const template = join(root, ".data", "pglite-template");
  if (!existsSync(join(template, "PG_VERSION"))) {
    const making = `${template}.making`; // renamed once complete: a killed launcher leaves no half template
    rmSync(making, { recursive: true, force: true });
    const script = `const { PGlite } = await import("@electric-sql/pglite"); const db = await PGlite.create(process.argv[1]); await db.close();`;
    await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script, making], { cwd: root });
    renameSync(making, template);
  }
  for (const name of missing) {
    const folder = join(root, ".data", name, "pglite");
    rmSync(folder, { recursive: true, force: true });
    cpSync(template, folder, { recursive: true });
  }
}
