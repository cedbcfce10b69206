// `npm run deploy:gen`: writes the deploy files derived from mesh/topology.ts: envoy/<name>.yaml
// (each service's sidecar and the gateway's) and envoy/sds/ (where a sidecar finds its
// certificates). They are committed; a test fails when they differ from what this writes.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { projectRoot } from "../mesh/project-root.js";
import { deployFiles } from "./deploy/files.js";

const written = deployFiles();
rmSync(join(projectRoot, "envoy"), { recursive: true, force: true });
for (const [path, content] of Object.entries(written)) {
  mkdirSync(join(projectRoot, path, ".."), { recursive: true });
  writeFileSync(join(projectRoot, path), content);
}
console.log(`wrote ${Object.keys(written).length} files: ${Object.keys(written).join(", ")}`);
