// `npm run deploy:gen`: writes the deploy files derived from mesh/topology.ts (see
// scripts/deploy/files.ts): the Envoy sidecars (envoy/), docker-compose.yml with what it mounts
// (deploy/compose/) and the Kubernetes manifests (deploy/k8s/). They are committed; a test fails
// when they differ from what this writes.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { projectRoot } from "../mesh/project-root.js";
import { deployFiles, GENERATED_ROOTS } from "./deploy/files.js";

const written = deployFiles();
for (const root of GENERATED_ROOTS) rmSync(join(projectRoot, root), { recursive: true, force: true });
for (const [path, content] of Object.entries(written)) {
  mkdirSync(join(projectRoot, path, ".."), { recursive: true });
  writeFileSync(join(projectRoot, path), content);
}
console.log(`wrote ${Object.keys(written).length} files under ${GENERATED_ROOTS.join(", ")}`);
