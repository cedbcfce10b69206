// Mutual TLS: only callers holding a certificate from the mesh CA get in, the client checks it
// reached the service it meant, and handlers see who is calling.
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { TLSSocket } from "node:tls";
import { Code } from "@connectrpc/connect";
import { IdentityService, type GetJwksResponse } from "../../gen/shop/identity/v1/identity_pb.js";
import { callerOf, headers, type Caller } from "../../mesh/rpc/call-scope.js";
import { createCa, serviceFromSan } from "../../mesh/certs.js";
import { grpcMethodDefinition } from "../../mesh/rpc/grpc-adapter.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { clientFor, rejection, startServer, type StubServer } from "../support/servers.js";

let pki: TestPki;
let server: StubServer;
let lastCaller: Caller | undefined;

beforeAll(async () => {
  pki = await createTestPki();
  server = await startServer(pki, "identity", IdentityService, {
    getJwks(_req, ctx) {
      lastCaller = callerOf(ctx);
      return { keys: [{ kid: "k1" }] };
    },
  });
});
afterAll(() => server.drain());

/** A raw grpc-js call with whatever credentials the test wants, bypassing the mesh client. */
function rawGetJwks(credentials: grpc.ChannelCredentials): Promise<GetJwksResponse> {
  const def = grpcMethodDefinition(IdentityService.method.getJwks);
  const client = new grpc.Client(server.address, credentials, { "grpc.ssl_target_name_override": "identity" });
  return new Promise<GetJwksResponse>((resolve, reject) =>
    client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, {}, new grpc.Metadata(), { deadline: Date.now() + 3000 }, (err, res) => {
      client.close();
      err ? reject(err) : resolve(res as GetJwksResponse);
    }),
  );
}

describe("mutual TLS", () => {
  it("serves a client holding a mesh certificate, and tells the handler who it is", async () => {
    const client = await clientFor(pki, IdentityService, "identity", [server.address]);
    const res = await client.getJwks({});
    expect(res.keys[0]?.kid).toBe("k1");
    expect(lastCaller).toEqual({ service: "client", edge: false });
    client.close();
  });

  it("knows the caller from its certificate alone, whatever metadata it sends", async () => {
    const client = await clientFor(pki, IdentityService, "identity", [server.address]);
    lastCaller = undefined;
    await client.getJwks({}, { headers: { "x-mesh-verified-caller": "gateway" } });
    expect(lastCaller).toEqual({ service: "client", edge: false });
    client.close();
  });

  it("reads a connection's certificate once, and a new connection's again (a rotated certificate counts)", async () => {
    const reads = vi.spyOn(TLSSocket.prototype, "getPeerCertificate");
    try {
      const asClient = await clientFor(pki, IdentityService, "identity", [server.address]);
      await asClient.getJwks({});
      const afterFirst = reads.mock.calls.length;
      for (let i = 0; i < 5; i++) await asClient.getJwks({});
      expect(reads.mock.calls.length).toBe(afterFirst); // same connection: the identity is known
      expect(lastCaller?.service).toBe("client");

      // Another certificate on a new connection to the same server: read, and named anew.
      const asGateway = await clientFor(pki, IdentityService, "identity", [server.address], { as: "gateway" });
      await asGateway.getJwks({});
      expect(reads.mock.calls.length).toBeGreaterThan(afterFirst);
      expect(lastCaller?.service).toBe("gateway");
      await asClient.getJwks({});
      expect(lastCaller?.service).toBe("client");
      asClient.close();
      asGateway.close();
    } finally {
      reads.mockRestore();
    }
  });

  it("refuses a client without a certificate", async () => {
    const err = await rawGetJwks(grpc.credentials.createSsl(Buffer.from(pki.ca.cert))).then(() => undefined, (e) => e);
    expect(err?.code).toBe(grpc.status.UNAVAILABLE);
  });

  it("refuses a client whose certificate comes from another CA", async () => {
    const rogue = await createCa("Rogue CA");
    const pem = await rogue.issue("client");
    const err = await rawGetJwks(grpc.credentials.createSsl(Buffer.from(pki.ca.cert), Buffer.from(pem.key), Buffer.from(pem.cert))).then(() => undefined, (e) => e);
    expect(err?.code).toBe(grpc.status.UNAVAILABLE);
  });

  it("refuses to talk to a server that is not the upstream it expected", async () => {
    const client = await clientFor(pki, IdentityService, "catalog", [server.address], { policy: { maxAttempts: 1 } });
    const err = await rejection(client.getJwks({}));
    expect(err.code).toBe(Code.Unavailable);
    client.close();
  });

  it("accepts end-user metadata only from the gateway", async () => {
    const asClient = await clientFor(pki, IdentityService, "identity", [server.address]);
    const forged = await rejection(asClient.getJwks({}, { headers: { [headers.userId]: "u1", [headers.userRoles]: "admin" } }));
    expect(forged.code).toBe(Code.PermissionDenied);

    const asGateway = await clientFor(pki, IdentityService, "identity", [server.address], { as: "gateway" });
    await asGateway.getJwks({}, { headers: { [headers.userId]: "u1", [headers.userRoles]: "customer,admin" } });
    expect(lastCaller).toEqual({ service: "gateway", edge: true, user: { id: "u1", roles: ["customer", "admin"] } });
    asClient.close();
    asGateway.close();
  });

  it("names a peer only by a whole SPIFFE entry of its certificate", () => {
    expect(serviceFromSan("URI:spiffe://shopmesh/gateway, DNS:localhost")).toBe("gateway");
    expect(serviceFromSan("DNS:localhost, URI:spiffe://shopmesh/gateway")).toBe("gateway");
    expect(serviceFromSan("URI:spiffe://shopmesh/gateway.evil, DNS:localhost")).toBeUndefined();
    expect(serviceFromSan("URI:spiffe://shopmesh/gateway/x")).toBeUndefined();
    expect(serviceFromSan("DNS:URI:spiffe://shopmesh/gateway")).toBeUndefined();
  });
});
