// The folder holding package.json: the same whether this code runs from source, compiled in dist/,
// or bundled into one file per process (see scripts/build.mjs).
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const projectRoot = (function find(dir: string): string {
  return existsSync(join(dir, "package.json")) || dirname(dir) === dir ? dir : find(dirname(dir));
})(fileURLToPath(new URL(".", import.meta.url)));
