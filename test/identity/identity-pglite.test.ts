import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { identitySuite } from "./identity-suite.js";

let dir: string | undefined;
identitySuite("PGlite (embedded)", {
  async env() {
    dir ??= await mkdtemp(join(tmpdir(), "shopmesh-identity-"));
    return { DATA_DIR: dir };
  },
  async cleanup() {
    if (dir) await rm(dir, { recursive: true, force: true });
  },
});
