// Every generated deploy file is committed exactly as `npm run deploy:gen` writes it, and nothing
// else lies under the generated folders: a change to the topology that is not regenerated fails here.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { projectRoot } from "../../mesh/project-root.js";
import { deployFiles, GENERATED_ROOTS } from "../../scripts/deploy/files.js";

describe("generated deploy files", () => {
  const files = deployFiles();

  it("are committed exactly as npm run deploy:gen writes them", () => {
    for (const [path, content] of Object.entries(files)) {
      expect(readFileSync(join(projectRoot, path), "utf8"), `${path} is stale: run npm run deploy:gen`).toBe(content);
    }
  });

  it("leave nothing else under the generated folders", () => {
    const tracked = execFileSync("git", ["ls-files", "--", ...GENERATED_ROOTS], { cwd: projectRoot, encoding: "utf8" }).split("\n").filter(Boolean);
    expect(tracked.filter((path) => !(path in files)), "run npm run deploy:gen and commit what it removes").toEqual([]);
  });
});
