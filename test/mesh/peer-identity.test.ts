// Every endpoint of a service, health and reflection included, answers only peers whose
// certificate names a ShopMesh service: a certificate from the mesh CA alone is not enough.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { grpcMethodDefinition } from "../../mesh/rpc/grpc-adapter.js";
import { healthClient } from "../../mesh/rpc/health-client.js";
import type { TlsFiles } from "../../mesh/certs.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { startServer, type StubServer } from "../support/servers.js";

let pki: TestPki;
let server: StubServer;
beforeAll(async () => {
  pki = await createTestPki();
  server = await startServer(pki, "identity", IdentityService, { getJwks: () => ({ keys: [] }) });
});
afterAll(() => server.drain());

const channel = (tls: TlsFiles) =>
  new grpc.Client(server.address, grpc.credentials.createSsl(Buffer.from(tls.ca), Buffer.from(tls.key), Buffer.from(tls.cert)), {
    "grpc.ssl_target_name_override": "identity",
  });

/** grpc.reflection.v1 list_services, raw: the status is what this test is about. */
function listServices(tls: TlsFiles): Promise<grpc.status> {
  const client = channel(tls);
  const identity = (b: Buffer) => b;
  const call = client.makeBidiStreamRequest("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", identity, identity, new grpc.Metadata(), {
    deadline: Date.now() + 5_000,
  });
  return new Promise((resolve) => {
    call.on("data", () => (call.end(), resolve(grpc.status.OK)));
    call.on("error", (err: grpc.ServiceError) => resolve(err.code));
    call.write(Buffer.from([0x3a, 0x00])); // field 7 (list_services) = ""
  }).finally(() => client.close()) as Promise<grpc.status>;
}

function getJwks(tls: TlsFiles): Promise<grpc.status> {
  const client = channel(tls);
  const def = grpcMethodDefinition(IdentityService.method.getJwks);
  return new Promise<grpc.status>((resolve) =>
    client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, {}, new grpc.Metadata(), { deadline: Date.now() + 5_000 }, (err) =>
      resolve(err ? err.code : grpc.status.OK),
    ),
  ).finally(() => client.close());
}

const healthStatus = (tls: TlsFiles) => {
  const health = healthClient(server.address, "identity", tls);
  return health.check("", 5_000).then((s) => s, (err: grpc.ServiceError) => `${grpc.status[err.code]}`).finally(() => health.close());
};

describe("a certificate from the mesh CA that names no mesh service", () => {
  it("is refused by health, reflection and the application alike", async () => {
    const stray = await pki.stray();
    expect(await healthStatus(stray)).toBe("UNAUTHENTICATED");
    expect(grpc.status[await listServices(stray)]).toBe("UNAUTHENTICATED");
    expect(grpc.status[await getJwks(stray)]).toBe("UNAUTHENTICATED");
  });

  it("while a mesh service's certificate gets answers from all three", async () => {
    const client = await pki.tls("client");
    expect(await healthStatus(client)).toBe("SERVING");
    expect(grpc.status[await listServices(client)]).toBe("OK");
    expect(grpc.status[await getJwks(client)]).toBe("OK");
  });
});
