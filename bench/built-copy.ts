// The code under measurement: a temporary copy of the repository built as `npm start` builds it
// (scripts/build.mjs, one bundle per process in dist/). A copy, so that edits made in the work
// tree during a run change nothing measured, and the repository's own dist/ is left alone.
// BENCH_REF=<commit> measures that commit instead of the work tree (e.g. the before of a change).
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdtempSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { projectRoot } from "../mesh/project-root.js";
import { freshCopy, removeCopy } from "../test/support/fresh-start.js";

/** What the bundles are built from (as scripts/build.mjs fingerprints it). */
const bundled = ["mesh", "services", "gateway", "launcher", "gen", "scripts", "package.json", "package-lock.json"];

export interface BuiltCopy {
  dir: string;
  /** What was copied: "work tree" or the commit. */
  source: string;
  remove(): Promise<void>;
}

function copyOfCommit(ref: string): { dir: string; commit: string } {
  const commit = execFileSync("git", ["rev-parse", "--verify", `${ref}^{commit}`], { cwd: projectRoot }).toString().trim();
  const dir = mkdtempSync(join(tmpdir(), "shopmesh-bench-"));
  chmodSync(dir, 0o755); // as `npm start` needs of a checkout
  const archive = execFileSync("git", ["archive", "--format=tar", commit], { cwd: projectRoot, maxBuffer: 512 << 20 });
  execFileSync("tar", ["-x", "-C", dir], { input: archive });
  symlinkSync(join(projectRoot, "node_modules"), join(dir, "node_modules"));
  return { dir, commit };
}

export function builtCopy(ref = process.env.BENCH_REF): BuiltCopy {
  let dir: string;
  let source: string;
  if (ref) ({ dir, commit: source } = copyOfCommit(ref));
  else {
    const git = (...args: string[]) => execFileSync("git", args, { cwd: projectRoot }).toString().trim();
    source = `work tree at ${git("rev-parse", "--short", "HEAD")}${git("status", "--porcelain", "--", ...bundled) ? " with uncommitted changes" : ""}`;
    dir = freshCopy(projectRoot, "shopmesh-bench-");
  }
  const built = spawnSync(process.execPath, ["scripts/build.mjs"], { cwd: dir, stdio: "inherit" });
  if (built.status !== 0) {
    void removeCopy(dir);
    throw new Error(`the build of the copy failed (exit ${built.status})`);
  }
  return { dir, source, remove: () => removeCopy(dir) };
}
