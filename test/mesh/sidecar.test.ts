// The runtime behind a sidecar (MESH_TRANSPORT=sidecar): plaintext on loopback only, the caller
// known from the sidecar's XFCC under every rule of transport.ts and from nothing else, deadlines
// carried through, app retries kept for what the sidecar did not retry, and both modes calling
// each other. The sidecar is test/support/sidecar-proxy.ts: real TLS and HTTP/2, doing what
// envoy/<name>.yaml tells Envoy to do.
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import * as grpc from "@grpc/grpc-js";
import { create, toBinary, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { GetUserRequestSchema, IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { callerOf, headers } from "../../mesh/rpc/call-scope.js";
import { healthClient } from "../../mesh/rpc/health-client.js";
import { isSidecarReply } from "../../mesh/rpc/errors.js";
import { callerFromXfcc, isLoopback, parseXfcc, XFCC } from "../../mesh/rpc/transport.js";
import { spiffeId } from "../../mesh/certs.js";
import { ConfigError } from "../../mesh/config.js";
import { catalog } from "../../services/catalog/catalog.js";
import { startService } from "../../mesh/service.js";
import { createClient } from "../../mesh/rpc/client.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { clientFor, rejection, startServer, type StubServer } from "../support/servers.js";
import { startTestSidecar, type TestSidecar } from "../support/sidecar-proxy.js";

let pki: TestPki;
const cleanups: (() => Promise<unknown> | unknown)[] = [];
beforeAll(async () => {
  pki = await createTestPki();
});
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

const USER = "018f0000-0000-7000-8000-000000000001";
const fast = { initialBackoffMs: 5, maxBackoffMs: 20 };

/** Who the server saw calling: the service, and the end user it may speak for. */
const whoCalled = (ctx: HandlerContext) => {
  const caller = callerOf(ctx);
  return { user: { id: USER, email: caller.service, displayName: caller.user?.id ?? "" } };
};

async function stub<S extends DescService>(identity: string, service: S, impl: Partial<ServiceImpl<S>>, transport: "mtls" | "sidecar"): Promise<StubServer> {
  const server = await startServer(pki, identity, service, impl, { transport });
  cleanups.push(() => server.drain());
  return server;
}

async function sidecarFor(identity: string, app: StubServer, callers: readonly string[]): Promise<TestSidecar> {
  const sidecar = await startTestSidecar(pki, identity, { appPort: app.port, callers });
  cleanups.push(() => sidecar.close());
  return sidecar;
}

/** A raw GetUser to `address` in plaintext with the metadata given, as anything on loopback could make it. */
function rawCall(address: string, metadata: Record<string, string | string[] | undefined>): Promise<grpc.StatusObject> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) for (const value of [v ?? []].flat()) md.add(k, value);
  const request = Buffer.from(toBinary(GetUserRequestSchema, create(GetUserRequestSchema, { id: USER })));
  return new Promise((resolve) => {
    const call = client.makeUnaryRequest("/shop.identity.v1.IdentityService/GetUser", (x: Buffer) => x, (x: Buffer) => x, request, md, { deadline: Date.now() + 5_000 }, () => {});
    call.on("status", (status) => {
      client.close();
      resolve(status);
    });
  });
}

describe("the XFCC rules", () => {
  const self = "identity";
  const good = `By=${spiffeId(self)};Hash=ab12;URI=spiffe://shopmesh/gateway`;

  it("trust one element from a loopback peer, By this service, naming a ShopMesh service", () => {
    expect(callerFromXfcc("127.0.0.1:40000", [good], self)).toBe("gateway");
    expect(callerFromXfcc("::1:40000", [good], self)).toBe("gateway");
    expect(callerFromXfcc("::ffff:127.0.0.1:40000", [good], self)).toBe("gateway");
    // Envoy quotes a Subject, which may hold the separators: still one element.
    expect(callerFromXfcc("127.0.0.1:1", [`By=${spiffeId(self)};Subject="CN=a,O=b;c";URI=spiffe://shopmesh/order`], self)).toBe("order");
  });

  it("refuse a spoofed header from a peer that is not on loopback", () => {
    expect(callerFromXfcc("10.0.0.7:40000", [good], self)).toBeUndefined();
    expect(callerFromXfcc("192.168.1.2:1", [good], self)).toBeUndefined();
    expect(callerFromXfcc("2001:db8::1:1", [good], self)).toBeUndefined();
  });

  it("refuse two elements, two headers, a wrong or missing By, and a URI that is not one ShopMesh service", () => {
    const peer = "127.0.0.1:1";
    expect(callerFromXfcc(peer, [`${good},By=${spiffeId(self)};URI=spiffe://shopmesh/order`], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [good, good], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [good.replace(spiffeId(self), spiffeId("catalog"))], self)).toBeUndefined();
    expect(callerFromXfcc(peer, ["URI=spiffe://shopmesh/gateway"], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [`By=${spiffeId(self)};By=${spiffeId(self)};URI=spiffe://shopmesh/gateway`], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [`By=${spiffeId(self)};URI=spiffe://shopmesh/gateway;URI=spiffe://shopmesh/order`], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [`By=${spiffeId(self)};URI=spiffe://shopmesh/gateway.evil`], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [`By=${spiffeId(self)};URI=spiffe://elsewhere/gateway`], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [`By=${spiffeId(self)};URI=spiffe://shopmesh/gateway, DNS:x`], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [`By=${spiffeId(self)};URI="spiffe://shopmesh/gateway`], self)).toBeUndefined();
    // Nothing trimmed, no key twice in another case, and a URI that is exactly one SPIFFE id.
    expect(callerFromXfcc(peer, [`By=${spiffeId(self)} ;URI=spiffe://shopmesh/gateway`], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [`By=${spiffeId(self)};URI=spiffe://shopmesh/gateway\t`], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [`by=${spiffeId("catalog")};By=${spiffeId(self)};URI=spiffe://shopmesh/gateway`], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [`By=${spiffeId(self)};uri=spiffe://shopmesh/order;URI=spiffe://shopmesh/gateway`], self)).toBeUndefined();
    expect(callerFromXfcc(peer, [`By=${spiffeId(self)};URI="spiffe://shopmesh/x y, URI:spiffe://shopmesh/gateway"`], self)).toBeUndefined();
  });

  it("parse Envoy's quoting, and refuse what does not parse", () => {
    expect(parseXfcc('By=a;Subject="x=\\"1\\",y";URI=b')).toEqual([[["By", "a"], ["Subject", 'x="1",y'], ["URI", "b"]]]);
    expect(parseXfcc("By=a,URI=b")).toHaveLength(2);
    expect(parseXfcc("garbage")).toBeUndefined();
    expect(parseXfcc('By="a')).toBeUndefined();
  });

  it("know loopback from anything else", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "0:0:0:0:0:0:0:1", "::ffff:127.0.0.1", "localhost"]) expect(isLoopback(host), host).toBe(true);
    for (const host of ["0.0.0.0", "10.0.0.1", "::", "::2", "128.0.0.1", "example.com", "::ffff:10.0.0.1"]) expect(isLoopback(host), host).toBe(false);
  });
});

describe("a service behind its sidecar", () => {
  it("refuses to start unless it listens on 127.0.0.1, where its sidecar forwards", async () => {
    for (const HOST of ["0.0.0.0", "::", "::1", "192.0.2.1"]) {
      const err = await startService(catalog, { MESH_TRANSPORT: "sidecar", HOST, PORT: "0", METRICS_PORT: "0", CERTS_DIR: await pki.dir(["catalog"]), DATA_DIR: "memory://", LOG_LEVEL: "silent" }).catch((e) => e);
      expect(err, HOST).toBeInstanceOf(ConfigError);
      expect(err.message).toMatch(/HOST must be 127\.0\.0\.1 behind a sidecar/);
    }
  });

  it("calls upstreams only through its sidecar's loopback listeners, never in plaintext elsewhere", async () => {
    const tls = await pki.tls("order");
    for (const address of ["catalog:50052", "10.0.0.7:50052"]) {
      expect(() => createClient(IdentityService, { upstream: "catalog", addresses: [address], tls, transport: "sidecar" }), address).toThrow(ConfigError);
      expect(() => healthClient(address, "catalog", tls, "sidecar"), address).toThrow(ConfigError);
    }
    createClient(IdentityService, { upstream: "catalog", addresses: ["127.0.0.1:50052"], tls, transport: "sidecar" }).close();
    createClient(IdentityService, { upstream: "catalog", addresses: ["catalog:50052"], tls }).close(); // direct mTLS: anywhere
  });

  it("knows its caller from the sidecar's XFCC, never from one the caller sent", async () => {
    const app = await stub("identity", IdentityService, { getUser: (_req, ctx) => whoCalled(ctx) }, "sidecar");
    const sidecar = await sidecarFor("identity", app, ["gateway", "order"]);
    const asGateway = await clientFor(pki, IdentityService, "identity", [sidecar.inboundAddress], { as: "gateway" });
    const asOrder = await clientFor(pki, IdentityService, "identity", [sidecar.inboundAddress], { as: "order", policy: { maxAttempts: 1 } });
    cleanups.push(() => asGateway.close(), () => asOrder.close());

    const seen = await asGateway.getUser({ id: USER }, { headers: { [headers.userId]: USER } });
    expect(seen.user).toMatchObject({ email: "gateway", displayName: USER });
    expect((await asOrder.getUser({ id: USER })).user?.email).toBe("order");
    // order claims to be the gateway in its own XFCC, to speak for a user: the sidecar replaced the header.
    const forged = await rejection(asOrder.getUser({ id: USER }, { headers: { [XFCC]: `By=${spiffeId("identity")};URI=${spiffeId("gateway")}`, [headers.userId]: USER } }));
    expect(forged.code).toBe(Code.PermissionDenied);
    expect(sidecar.counters.forwarded).toBe(3);
  });

  it("lets in only the callers its sidecar allows (RBAC), as Envoy answers gRPC", async () => {
    const app = await stub("identity", IdentityService, { getUser: (_req, ctx) => whoCalled(ctx) }, "sidecar");
    const sidecar = await sidecarFor("identity", app, ["gateway"]);
    const asCatalog = await clientFor(pki, IdentityService, "identity", [sidecar.inboundAddress], { as: "catalog", policy: { maxAttempts: 1 } });
    cleanups.push(() => asCatalog.close());
    expect((await rejection(asCatalog.getUser({ id: USER }))).code).toBe(Code.PermissionDenied);
    expect(sidecar.counters.forwarded).toBe(0);
  });

  it("refuses a call on its loopback port that has no XFCC, two elements or another service's By, yet answers health probes", async () => {
    let handled = 0;
    const app = await stub("identity", IdentityService, { getUser: (_req, ctx) => (handled++, whoCalled(ctx)) }, "sidecar");
    const element = (by: string, uri = "gateway") => `By=${spiffeId(by)};Hash=00;URI=${spiffeId(uri)}`;
    for (const metadata of [
      {},
      { [XFCC]: `${element("identity")},${element("identity", "order")}` },
      { [XFCC]: [element("identity"), element("identity")] },
      { [XFCC]: element("catalog") },
      { [XFCC]: `URI=${spiffeId("gateway")}` },
    ]) {
      const status = await rawCall(app.address, metadata);
      expect(status.code, JSON.stringify(metadata)).toBe(grpc.status.UNAUTHENTICATED);
    }
    expect(handled).toBe(0);
    // What the sidecar itself sends passes (anything on loopback is the sidecar: nothing else reaches it).
    expect((await rawCall(app.address, { [XFCC]: element("identity") })).code).toBe(grpc.status.OK);
    expect(handled).toBe(1);
    const health = healthClient(app.address, "identity", await pki.tls("client"), "sidecar");
    cleanups.push(() => health.close());
    expect(await health.check()).toBe("SERVING");
  });

  it("ignores XFCC entirely when it speaks mTLS itself", async () => {
    const app = await stub("identity", IdentityService, { getUser: (_req, ctx) => whoCalled(ctx) }, "mtls");
    const asOrder = await clientFor(pki, IdentityService, "identity", [app.address], { as: "order", policy: { maxAttempts: 1 } });
    cleanups.push(() => asOrder.close());
    const xfcc = `By=${spiffeId("identity")};URI=${spiffeId("gateway")}`;
    expect((await asOrder.getUser({ id: USER }, { headers: { [XFCC]: xfcc } })).user?.email).toBe("order");
    expect((await rejection(asOrder.getUser({ id: USER }, { headers: { [XFCC]: xfcc, [headers.userId]: USER } }))).code).toBe(Code.PermissionDenied);
  });

  it("keeps the caller's deadline through both sidecars", async () => {
    let sawDeadline: number | undefined;
    let aborted = false;
    const app = await stub("identity", IdentityService, {
      getUser: (_req, ctx) =>
        new Promise((_resolve, reject) => {
          sawDeadline = ctx.timeoutMs();
          ctx.signal.addEventListener("abort", () => ((aborted = true), reject(ctx.signal.reason)));
        }),
    }, "sidecar");
    const inbound = await sidecarFor("identity", app, ["order"]);
    const orderSidecar = await startTestSidecar(pki, "order", { appPort: 1, callers: [] });
    cleanups.push(() => orderSidecar.close());
    const outbound = await orderSidecar.outbound("identity", inbound.inboundAddress);
    // A 2 s deadline, well under the 5 s default: the server must see it, less what the trip took.
    const client = await clientFor(pki, IdentityService, "identity", [outbound], { as: "order", transport: "sidecar", policy: { maxAttempts: 1, timeoutMs: 2_000 } });
    cleanups.push(() => client.close());
    expect((await rejection(client.getUser({ id: USER }))).code).toBe(Code.DeadlineExceeded);
    expect(sawDeadline).toBeDefined();
    expect(sawDeadline).toBeLessThanOrEqual(2_000);
    await expect.poll(() => aborted, { timeout: 30_000 }).toBe(true); // the handler was told when it passed
  });
});

describe("retries with a sidecar", () => {
  it("never retries a failure the sidecar answered itself (it retried the connection already)", async () => {
    const sidecar = await startTestSidecar(pki, "order", { appPort: 1, callers: [] });
    cleanups.push(() => sidecar.close());
    const nowhere = await startServer(pki, "identity", IdentityService, {});
    await nowhere.drain(); // a port where nothing listens any more
    const outbound = await sidecar.outbound("identity", nowhere.address);
    const client = await clientFor(pki, IdentityService, "identity", [outbound], { as: "order", transport: "sidecar", policy: { ...fast, maxAttempts: 3 } });
    cleanups.push(() => client.close());
    const err = await rejection(client.getUser({ id: USER }));
    expect(err.code).toBe(Code.Unavailable);
    expect(isSidecarReply(err)).toBe(true);
    expect(sidecar.counters.localReplies).toBe(1); // one call from the app…
    expect(sidecar.counters.connects).toBe(3); // …which the sidecar tried three times
  });

  it("retries an idempotent call whose upstream replica died mid-call (Envoy does not retry that, nor mark it)", async () => {
    let calls = 0;
    const app = await stub("identity", IdentityService, { getUser: (_req, ctx) => (calls++, whoCalled(ctx)) }, "sidecar");
    const inbound = await sidecarFor("identity", app, ["order"]);
    const orderSidecar = await startTestSidecar(pki, "order", { appPort: 1, callers: [] });
    cleanups.push(() => orderSidecar.close());
    const client = await clientFor(pki, IdentityService, "identity", [await orderSidecar.outbound("identity", inbound.inboundAddress)], { as: "order", transport: "sidecar", policy: { ...fast, maxAttempts: 3 } });
    cleanups.push(() => client.close());
    inbound.dropNextInbound(1);
    expect((await client.getUser({ id: USER })).user?.email).toBe("order");
    expect(orderSidecar.counters.forwarded).toBe(2); // the app's retry went out again through its sidecar
    expect(calls).toBe(1);
    expect(orderSidecar.counters.localReplies).toBe(0);
  });

  it("retries an UNAVAILABLE the upstream app answered, which the sidecar passed on untouched", async () => {
    let calls = 0;
    const app = await stub("identity", IdentityService, {
      getUser(_req, ctx) {
        if (++calls < 3) throw new ConnectError("warming up", Code.Unavailable);
        return whoCalled(ctx);
      },
    }, "sidecar");
    const inbound = await sidecarFor("identity", app, ["order"]);
    const orderSidecar = await startTestSidecar(pki, "order", { appPort: 1, callers: [] });
    cleanups.push(() => orderSidecar.close());
    const client = await clientFor(pki, IdentityService, "identity", [await orderSidecar.outbound("identity", inbound.inboundAddress)], { as: "order", transport: "sidecar", policy: { ...fast, maxAttempts: 3 } });
    cleanups.push(() => client.close());
    expect((await client.getUser({ id: USER })).user?.email).toBe("order");
    expect(calls).toBe(3);
  });
});

describe("both modes in one mesh", () => {
  it("a sidecar-mode caller reaches a direct-mTLS service, and a direct-mTLS caller a sidecar-mode one", async () => {
    const direct = await stub("catalog", IdentityService, { getUser: (_req, ctx) => whoCalled(ctx) }, "mtls");
    const behind = await stub("identity", IdentityService, { getUser: (_req, ctx) => whoCalled(ctx) }, "sidecar");
    const identitySidecar = await sidecarFor("identity", behind, ["catalog", "order"]);
    const orderSidecar = await startTestSidecar(pki, "order", { appPort: 1, callers: [] });
    cleanups.push(() => orderSidecar.close());

    // order, behind its sidecar, calls catalog, which speaks mTLS itself: catalog sees order.
    const toCatalog = await clientFor(pki, IdentityService, "catalog", [await orderSidecar.outbound("catalog", direct.address)], { as: "order", transport: "sidecar" });
    // catalog, speaking mTLS itself, calls identity behind its sidecar: identity sees catalog.
    const toIdentity = await clientFor(pki, IdentityService, "identity", [identitySidecar.inboundAddress], { as: "catalog" });
    cleanups.push(() => toCatalog.close(), () => toIdentity.close());
    expect((await toCatalog.getUser({ id: USER })).user?.email).toBe("order");
    expect((await toIdentity.getUser({ id: USER })).user?.email).toBe("catalog");
  });
});
