// Envoy's own API schema, to check generated sidecar configurations without an Envoy binary.
// @grpc/grpc-js-xds ships Envoy's API protos (deps/envoy-api, with xds, googleapis and
// protoc-gen-validate); `buf build` turns the parts a sidecar uses into one descriptor set, and
// protobuf-es `fromJson` against it rejects unknown fields (inside typed_config Anys too), bad
// enum values and bad durations, as Envoy's own parser does.
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createFileRegistry, fromBinary, fromJson, type FileRegistry, type JsonValue } from "@bufbuild/protobuf";
import { FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { projectRoot } from "../../mesh/project-root.js";

/** The packages of Envoy's API a sidecar configuration uses (the bootstrap pulls in the core ones). */
const PACKAGES = [
  "envoy/config/bootstrap/v3",
  "envoy/extensions/filters/network/http_connection_manager/v3",
  "envoy/extensions/filters/http/router/v3",
  "envoy/extensions/filters/http/rbac/v3",
  "envoy/extensions/filters/http/health_check/v3",
  "envoy/extensions/transport_sockets/tls/v3",
  "envoy/extensions/upstreams/http/v3",
  "envoy/extensions/retry/host/previous_hosts/v3",
];

let registry: FileRegistry | undefined;

/** Builds (once per process) the registry of Envoy's API messages. */
export function envoyRegistry(): FileRegistry {
  if (registry) return registry;
  const deps = join(dirname(createRequire(join(projectRoot, "package.json")).resolve("@grpc/grpc-js-xds/package.json")), "deps");
  const work = mkdtempSync(join(tmpdir(), "shopmesh-envoy-api-"));
  try {
    for (const part of ["envoy-api", "googleapis", "xds", "protoc-gen-validate"]) cpSync(join(deps, part), join(work, part), { recursive: true });
    // envoy-api uses StringRules.ignore_empty (26), which the shipped validate.proto lacks.
    const validate = join(work, "protoc-gen-validate", "validate", "validate.proto");
    writeFileSync(validate, readFileSync(validate, "utf8").replace("message StringRules {", "message StringRules {\n    optional bool ignore_empty = 26;"));
    writeFileSync(join(work, "buf.yaml"), "version: v2\nmodules:\n  - path: envoy-api\n  - path: googleapis\n  - path: xds\n  - path: protoc-gen-validate\n");
    const out = join(work, "envoy.binpb");
    execFileSync(join(projectRoot, "node_modules", ".bin", "buf"), ["build", "-o", out, ...PACKAGES.flatMap((p) => ["--path", join("envoy-api", p)])], { cwd: work, stdio: "pipe" });
    registry = createFileRegistry(fromBinary(FileDescriptorSetSchema, readFileSync(out)));
    return registry;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Parses `config` as Envoy's Bootstrap; throws naming the first field Envoy would refuse. */
export function checkEnvoyBootstrap(config: unknown): void {
  checkEnvoyMessage("envoy.config.bootstrap.v3.Bootstrap", config);
}

/** Parses `value` as the Envoy message `typeName` (an SDS secret, say); throws like checkEnvoyBootstrap. */
export function checkEnvoyMessage(typeName: string, value: unknown): void {
  const reg = envoyRegistry();
  const message = reg.getMessage(typeName);
  if (!message) throw new Error(`${typeName} is not in the schema built from Envoy's API`);
  fromJson(message, value as JsonValue, { registry: reg });
}
