// The edge serves what the contracts declare with (shop.common.v1.edge), to whom they declare it,
// and nothing else; and input that does not fit a request's JSON shape is refused naming the
// field, the way validation errors are. Real identity (tokens, an admin account) behind a real
// gateway; the other services are absent on purpose: a call the edge lets through ends in 503
// (nobody there), a call the edge turns away never gets that far.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { getOption, hasOption } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { EdgeAccess, edge } from "../../gen/shop/common/v1/edge_pb.js";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { OrderService } from "../../gen/shop/order/v1/order_pb.js";
import { startGateway, type RunningGateway } from "../../gateway/gateway.js";
import { publicServices } from "../../gateway/upstreams.js";
import { startIdentity, type IdentityUnderTest } from "../support/identity.js";
import { createTestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { startNats, startRedis, type TestServer } from "../support/processes.js";

const ADMIN = { email: "admin@edge.test", password: "admin-password" };
let nats: TestServer;
let redis: TestServer;
let identity: IdentityUnderTest;
let gateway: RunningGateway;
let base: string;
let customer: string;
let admin: string;

const call = async (method: string, path: string, opts: { token?: string; body?: unknown } = {}) => {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { "content-type": "application/json", ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}) },
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined };
};
const login = async (email: string, password: string) => (await call("POST", "/v1/auth/login", { body: { email, password } })).body.accessToken as string;
const bearer = (token: string): { interceptors: Interceptor[] } => ({
  interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))],
});

beforeAll(async () => {
  const pki = await createTestPki();
  [nats, redis] = await Promise.all([startNats(), startRedis()]);
  identity = await startIdentity(pki, { NATS_URL: nats.url, ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password });
  const nowhere = `127.0.0.1:${await freePort()}`;
  const others = Object.fromEntries(["catalog", "inventory", "order", "payment", "notification"].map((s) => [`${s.toUpperCase()}_ADDRESSES`, nowhere]));
  gateway = await startGateway({
    PORT: "0", METRICS_PORT: "0", LOG_LEVEL: "silent", CERTS_DIR: await pki.dir(["gateway"]), REDIS_URL: redis.url,
    IDENTITY_ADDRESSES: identity.address, ...others,
  });
  base = `http://127.0.0.1:${gateway.port}`;
  const email = `customer-${Date.now()}@edge.test`;
  expect((await call("POST", "/v1/auth/register", { body: { email, password: "correct horse", displayName: "Cus" } })).status).toBe(200);
  customer = await login(email, "correct horse");
  admin = await login(ADMIN.email, ADMIN.password);
  expect([customer, admin].every(Boolean)).toBe(true);
}, 90_000);
afterAll(async () => {
  await gateway?.stop();
  await identity?.stop();
  await Promise.all([nats?.stop(), redis?.stop()]);
});

const product = { sku: "EDGE-1", name: "Edge", category: "home", price: { amountMinor: "100", currencyCode: "EUR" } };

describe("edge: access follows the contract", () => {
  it("declares every RPC of the public services as public, user or admin, or leaves it to the mesh", () => {
    const declared = publicServices.flatMap(([s]) => s.methods).map((m) => [`${m.parent.name}.${m.name}`, hasOption(m, edge) ? EdgeAccess[getOption(m, edge).access] : "mesh only"]);
    expect(Object.fromEntries(declared)).toMatchObject({
      "IdentityService.Login": "PUBLIC",
      "IdentityService.GetJwks": "mesh only",
      "CatalogService.GetProduct": "PUBLIC",
      "CatalogService.CreateProduct": "ADMIN",
      "OrderService.CreateOrder": "USER",
    });
    expect(declared.filter(([, access]) => access === "UNSPECIFIED")).toEqual([]); // the option set, but to nothing
  });

  it("public RPCs pass without a token, user RPCs need one, admin RPCs need the admin role", async () => {
    // Passing the edge ends in 503 here (catalog, order are absent); being turned away does not.
    expect((await call("GET", "/v1/products/0190a000-0000-7000-8000-000000000001")).status).toBe(503);
    expect((await call("GET", "/v1/orders")).status).toBe(401);
    expect((await call("GET", "/v1/orders", { token: customer })).status).toBe(503);
    expect((await call("POST", "/v1/products", { body: product })).status).toBe(401);
    const forbidden = await call("POST", "/v1/products", { body: product, token: customer });
    expect([forbidden.status, forbidden.body.code]).toEqual([403, "permission_denied"]);
    expect(forbidden.body.message).toMatch(/admin/);
    expect((await call("PATCH", "/v1/products/0190a000-0000-7000-8000-000000000001", { body: { name: "x" }, token: customer })).status).toBe(403);
    expect((await call("POST", "/v1/stock/0190a000-0000-7000-8000-000000000001:adjust", { body: { delta: 5 }, token: customer })).status).toBe(403);
    expect((await call("POST", "/v1/products", { body: product, token: admin })).status).toBe(503);
  });

  it("the same rules over Connect and gRPC-Web", async () => {
    for (const make of [createConnectTransport, createGrpcWebTransport]) {
      const asCustomer = createClient(OrderService, make({ baseUrl: base, httpVersion: "1.1", ...bearer(customer) }));
      const anonymous = createClient(OrderService, make({ baseUrl: base, httpVersion: "1.1" }));
      expect((await anonymous.listOrders({}).catch((e) => ConnectError.from(e))) as ConnectError).toMatchObject({ code: Code.Unauthenticated });
      expect((await asCustomer.listOrders({}).catch((e) => ConnectError.from(e))) as ConnectError).toMatchObject({ code: Code.Unavailable });
      const { CatalogService } = await import("../../gen/shop/catalog/v1/catalog_pb.js");
      const catalog = createClient(CatalogService, make({ baseUrl: base, httpVersion: "1.1", ...bearer(customer) }));
      expect((await catalog.createProduct({ ...product, price: { amountMinor: 100n, currencyCode: "EUR" } }).catch((e) => ConnectError.from(e))) as ConnectError).toMatchObject({ code: Code.PermissionDenied });
    }
  });

  it("an RPC the contract does not expose is not served: 404 over REST, unimplemented over Connect and gRPC-Web", async () => {
    const rest = await call("GET", "/v1/auth/jwks");
    expect([rest.status, rest.body?.code]).toEqual([404, "not_found"]);
    for (const make of [createConnectTransport, createGrpcWebTransport]) {
      const client = createClient(IdentityService, make({ baseUrl: base, httpVersion: "1.1", ...bearer(admin) }));
      const err = await client.getJwks({}).then(() => undefined, (e) => ConnectError.from(e));
      expect(err?.code).toBe(Code.Unimplemented);
    }
    const openapi = (await call("GET", "/openapi.json")).body;
    expect(openapi.paths["/v1/auth/jwks"]).toBeUndefined();
    expect(openapi.paths["/v1/products"].post.security).toEqual([{ bearerAuth: [] }]);
    expect(openapi.paths["/v1/products"].get.security).toBeUndefined();
  });
});

describe("edge: JSON that does not fit the request names the field, not the protobuf type", () => {
  const violationPaths = (body: any) =>
    body.details.find((d: any) => d["@type"] === "type.googleapis.com/buf.validate.Violations").violations.map((v: any) =>
      v.field.elements.map((e: any) => (e.index === undefined ? e.fieldName : `${e.fieldName}[${e.index}]`)).join("."),
    );

  it("in a REST body, down to a list element's field", async () => {
    const order = { lines: [{ productId: "0190a000-0000-7000-8000-000000000001", quantity: 1 }, { productId: "0190a000-0000-7000-8000-000000000002", quantity: "many" }] };
    const res = await call("POST", "/v1/orders", { body: order, token: customer });
    expect([res.status, res.body.code]).toEqual([400, "invalid_argument"]);
    expect(res.body.message).toMatch(/^lines\[1\]\.quantity: /);
    expect(res.body.message).not.toMatch(/shop\.|cannot decode/);
    expect(violationPaths(res.body)).toEqual(["lines[1].quantity"]);
  });

  it("for a message-typed field (Money)", async () => {
    const res = await call("POST", "/v1/products", { body: { ...product, price: true }, token: admin });
    expect([res.status, res.body.message]).toEqual([400, expect.stringMatching(/^price: .*object/)]);
    expect(res.body.message).not.toMatch(/shop\.common\.v1\.Money|cannot decode/);
    expect(violationPaths(res.body)).toEqual(["price"]);
  });

  it("in a query parameter", async () => {
    const res = await call("GET", "/v1/products?pageSize=ten");
    expect([res.status, res.body.message]).toEqual([400, expect.stringMatching(/^pageSize: /)]);
    expect(violationPaths(res.body)).toEqual(["page_size"]);
  });

  it("in a Connect JSON request", async () => {
    const res = await fetch(`${base}/shop.order.v1.OrderService/CreateOrder`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${customer}` },
      body: JSON.stringify({ lines: [{ productId: "0190a000-0000-7000-8000-000000000001", quantity: { n: 1 } }] }),
    });
    expect(res.status).toBe(400);
    const body = await res.json();
    expect(body.code).toBe("invalid_argument");
    expect(body.message).toMatch(/^lines\[0\]\.quantity: /);
    expect(body.message).not.toMatch(/shop\.|cannot decode/);
  });
});
