// The edge end to end, through the gateway's real HTTP port, with the whole mesh behind it:
// plain HTTP (REST/JSON, SSE) and Connect/gRPC-Web clients, every error mapping, bad tokens,
// rate limits (shared by replicas: rate-limit.test.ts) with Redis down, and a service going away.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createClient, Code, ConnectError } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { SignJWT, generateKeyPair, decodeProtectedHeader, importJWK, type JWK } from "jose";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { OrderStatus } from "../../gen/shop/order/v1/order_pb.js";
import { startGateway, type RunningGateway } from "../../gateway/gateway.js";
import { demoProducts } from "../../services/catalog/demo.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { eventually } from "../support/eventually.js";

let mesh: TestMesh;
let gateway: RunningGateway;
let base: string;

async function gatewayEnv(extra: Record<string, string> = {}) {
  const addresses = Object.fromEntries(Object.entries(mesh.services).map(([name, s]) => [`${name.toUpperCase()}_ADDRESSES`, s.address]));
  return { PORT: "0", METRICS_PORT: "0", LOG_LEVEL: "silent", CERTS_DIR: await mesh.pki.dir(["gateway"]), REDIS_URL: mesh.redis.url, ...addresses, ...extra };
}

beforeAll(async () => {
  mesh = await startMesh();
  gateway = await startGateway(await gatewayEnv());
  base = `http://127.0.0.1:${gateway.port}`;
}, 120_000);
afterAll(async () => {
  await gateway?.stop();
  await mesh?.stop();
});

const json = async (path: string, init: RequestInit & { token?: string; body?: string } = {}) => {
  const res = await fetch(`${base}${path}`, {
    ...init,
    headers: { "content-type": "application/json", ...(init.token ? { authorization: `Bearer ${init.token}` } : {}), ...(init.headers as Record<string, string>) },
  });
  return { status: res.status, headers: res.headers, body: (await res.text().then((t) => (t ? JSON.parse(t) : undefined))) as any };
};
const post = (path: string, body: unknown, token?: string) => json(path, { method: "POST", body: JSON.stringify(body), token });

let n = 0;
async function signUp(): Promise<{ token: string; userId: string; email: string }> {
  const email = `shopper${++n}-${Date.now()}@example.com`;
  const reg = await post("/v1/auth/register", { email, password: "correct horse", displayName: "Shopper" });
  expect(reg.status).toBe(200);
  const login = await post("/v1/auth/login", { email, password: "correct horse" });
  return { token: login.body.accessToken, userId: login.body.user.id, email };
}

/** A CreateOrder body paying with a payment method token (from POST /v1/payment-methods). */
const orderBody = (productId: string, paymentToken = "pm_abcdefghijklmnopqrstuvwxyz012345") => ({
  lines: [{ productId, quantity: 1 }],
  shippingAddress: { recipientName: "Ada", addressLines: ["1 Main St"], city: "Town", countryCode: "DE" },
  paymentMethod: { token: paymentToken },
});

describe("gateway: the order flow over plain HTTP", () => {
  it("register → login → browse → order → watch (SSE) to CONFIRMED → notification", async () => {
    const { token } = await signUp();
    const list = await json("/v1/products?pageSize=3&query=mug");
    expect(list.status).toBe(200);
    expect(list.body.products[0].sku).toBe("MUG-001");
    const product = await json(`/v1/products/${demoProducts[0]!.id}`);
    expect(product.body.product.price).toEqual({ amountMinor: "1450", currencyCode: "EUR" });

    // The card goes to payment once; the order carries only the token.
    const method = await post("/v1/payment-methods", { cardNumber: "4242424242424242" }, token);
    expect([method.status, method.body.paymentMethod.cardLast4]).toEqual([200, "4242"]);
    expect(JSON.stringify(method.body)).not.toContain("4242424242424242");
    const body = JSON.stringify(orderBody(demoProducts[0]!.id, method.body.paymentMethod.token));
    const created = await json("/v1/orders", { method: "POST", body, token, headers: { "idempotency-key": "e2e-1" } });
    expect(created.status).toBe(200);
    const id = created.body.order.id;
    const again = await json("/v1/orders", { method: "POST", body, token, headers: { "idempotency-key": "e2e-1" } });
    expect(again.body.order.id).toBe(id); // Idempotency-Key carried to CreateOrder

    const sse = await fetch(`${base}/v1/orders/${id}:watch`, { headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" } });
    expect(sse.headers.get("content-type")).toBe("text/event-stream");
    const events = (await sse.text()).split("\n\n").filter(Boolean).map((e) => JSON.parse(e.replace(/^data: /, "")));
    expect(events.at(-1).order.status).toBe("ORDER_STATUS_CONFIRMED");

    const notes = await eventually(() => json("/v1/notifications", { token }), (r) => r.body.notifications?.some((x: any) => x.subject.includes(id)));
    expect(notes.status).toBe(200);
  });
});

describe("gateway: Connect and gRPC-Web clients", () => {
  it("serve the same public RPCs", async () => {
    for (const transport of [
      createConnectTransport({ baseUrl: base, httpVersion: "1.1" }), // Connect, JSON
      createConnectTransport({ baseUrl: base, httpVersion: "1.1", useBinaryFormat: true }), // Connect, binary
      createGrpcWebTransport({ baseUrl: base, httpVersion: "1.1" }),
    ]) {
      const catalog = createClient(CatalogService, transport);
      const { product } = await catalog.getProduct({ id: demoProducts[1]!.id });
      expect(product?.sku).toBe("KNF-002");
      const err = await catalog.getProduct({ id: "0190a000-0000-7000-8000-0000000000ff" }).catch((e) => e as ConnectError);
      expect((err as ConnectError).code).toBe(Code.NotFound);
    }
  });

  it("stream WatchOrder with a token", async () => {
    const { token } = await signUp();
    const { OrderService } = await import("../../gen/shop/order/v1/order_pb.js");
    const { PaymentService } = await import("../../gen/shop/payment/v1/payment_pb.js");
    const signedIn = createConnectTransport({ baseUrl: base, httpVersion: "1.1", interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))] });
    const [orders, payments] = [createClient(OrderService, signedIn), createClient(PaymentService, signedIn)];
    const { paymentMethod } = await payments.createPaymentMethod({ cardNumber: "4242424242424242" });
    const { order } = await orders.createOrder(orderBody(demoProducts[3]!.id, paymentMethod!.token));
    const statuses: OrderStatus[] = [];
    for await (const update of orders.watchOrder({ id: order!.id })) statuses.push(update.order!.status);
    expect(statuses.at(-1)).toBe(OrderStatus.CONFIRMED);
  });
});

describe("gateway: errors say what was wrong", () => {
  it("maps gRPC codes to HTTP statuses with {code, message, details}", async () => {
    const bad = await post("/v1/auth/register", { email: "nope", password: "short", displayName: "X" });
    expect(bad.status).toBe(400);
    expect(bad.body.code).toBe("invalid_argument");
    expect(bad.body.details[0]["@type"]).toBe("type.googleapis.com/buf.validate.Violations");
    expect(bad.body.details[0].violations.map((v: any) => v.field.elements[0].fieldName)).toEqual(["email", "password"]);

    const { token, email } = await signUp();
    expect((await post("/v1/auth/register", { email, password: "correct horse", displayName: "Twin" })).status).toBe(409);
    const missing = await json(`/v1/products/0190a000-0000-7000-8000-0000000000ff`);
    expect([missing.status, missing.body.code]).toEqual([404, "not_found"]);
    const forbidden = await post("/v1/products", { sku: "X-1", name: "X", category: "home", price: { amountMinor: "100", currencyCode: "EUR" } }, token);
    expect([forbidden.status, forbidden.body.code]).toEqual([403, "permission_denied"]);
    const card = await post("/v1/orders", { ...orderBody(demoProducts[0]!.id), paymentMethod: { cardNumber: "4242424242424242" } }, token);
    expect([card.status, card.body.code]).toEqual([400, "invalid_argument"]);
    expect(card.body.message).toMatch(/payment_method\.card_number: card numbers are not accepted here: create a payment method first \(POST \/v1\/payment-methods\)/);
    expect(JSON.stringify(card.body)).not.toContain("4242424242424242");
    const anonymous = await post("/v1/orders", orderBody(demoProducts[0]!.id));
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toMatch(/^Bearer/);
    expect((await json("/v1/nowhere")).status).toBe(404);
    const wrongMethod = await json(`/v1/products/${demoProducts[0]!.id}`, { method: "DELETE" });
    expect([wrongMethod.status, wrongMethod.headers.get("allow")]).toEqual([405, "GET, PATCH"]);
  });

  it("rejects malformed JSON, wrong types, unknown fields and oversized bodies", async () => {
    const malformed = await json("/v1/auth/login", { method: "POST", body: "{not json" });
    expect([malformed.status, malformed.body.message]).toEqual([400, expect.stringMatching(/not valid JSON/)]);
    const wrongType = await post("/v1/auth/login", { email: 42, password: "x" });
    expect(wrongType.status).toBe(400);
    expect(wrongType.body.message).toMatch(/email/);
    const unknown = await post("/v1/auth/login", { email: "a@b.co", password: "x", isAdmin: true });
    expect([unknown.status, unknown.body.message]).toEqual([400, expect.stringMatching(/isAdmin/)]);
    const huge = await post("/v1/auth/login", { email: "a@b.co", password: "x".repeat(2_000_000) });
    expect(huge.status).toBe(413);
  });
});

describe("gateway: bearer tokens", () => {
  it("refuses unsigned, wrongly signed, tampered and malformed tokens", async () => {
    const { token, userId } = await signUp();
    const { kid } = decodeProtectedHeader(token);
    const { privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
    const forge = (claims: { iss?: string; aud?: string; exp?: number; nbf?: number }) =>
      new SignJWT({ roles: ["customer", "admin"] })
        .setProtectedHeader({ alg: "EdDSA", kid })
        .setSubject(userId)
        .setIssuer(claims.iss ?? "shopmesh-identity")
        .setAudience(claims.aud ?? "shopmesh")
        .setIssuedAt()
        .setNotBefore(claims.nbf ?? 0)
        .setExpirationTime(claims.exp ?? Math.floor(Date.now() / 1000) + 600)
        .sign(privateKey);
    const unsigned = `${Buffer.from(JSON.stringify({ alg: "none", kid })).toString("base64url")}.${Buffer.from(JSON.stringify({ sub: userId, iss: "shopmesh-identity", aud: "shopmesh", exp: Math.floor(Date.now() / 1000) + 600, roles: ["admin"] })).toString("base64url")}.`;
    const [header, payload] = token.split(".");
    const tampered = `${header}.${Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(payload!, "base64url").toString()), roles: ["admin"] })).toString("base64url")}.${token.split(".")[2]}`;
    const cases: [string, string, RegExp][] = [
      ["wrongly signed (another key, same kid)", await forge({}), /signature/],
      ["tampered claims", tampered, /signature/],
      ["unsigned (alg none)", unsigned, /algorithm|malformed/],
      ["garbage", "not-a-token", /malformed/],
    ];
    for (const [name, bad, reason] of cases) {
      const res = await json("/v1/orders", { token: bad });
      expect(res.status, name).toBe(401);
      expect(res.body.message, name).toMatch(reason);
    }
    expect((await json("/v1/orders", { token })).status).toBe(200); // the real one works
  });

  it("refuses properly signed tokens that are expired, not yet valid, or for another audience or issuer", async () => {
    const { userId } = await signUp();
    // Sign with identity's real key (from its database), so only the claims are wrong.
    const [row] = await mesh.services.identity.db.query<{ kid: string; private_jwk: JWK }>("SELECT kid, private_jwk FROM signing_keys ORDER BY created_at DESC LIMIT 1");
    const key = await importJWK(row!.private_jwk, "EdDSA");
    const now = Math.floor(Date.now() / 1000);
    const sign = (c: { iss?: string; aud?: string; exp?: number; nbf?: number }) =>
      new SignJWT({ roles: ["customer"] })
        .setProtectedHeader({ alg: "EdDSA", kid: row!.kid })
        .setSubject(userId)
        .setIssuer(c.iss ?? "shopmesh-identity")
        .setAudience(c.aud ?? "shopmesh")
        .setNotBefore(c.nbf ?? now - 10)
        .setExpirationTime(c.exp ?? now + 600)
        .sign(key);
    expect((await json("/v1/orders", { token: await sign({}) })).status).toBe(200); // the control
    const cases: [string, string, RegExp][] = [
      ["expired", await sign({ exp: now - 60 }), /expired/],
      ["not yet valid", await sign({ nbf: now + 600 }), /nbf/],
      ["wrong audience", await sign({ aud: "someone-else" }), /aud/],
      ["wrong issuer", await sign({ iss: "evil" }), /iss/],
    ];
    for (const [name, token, reason] of cases) {
      const res = await json("/v1/orders", { token });
      expect(res.status, name).toBe(401);
      expect(res.body.message, name).toMatch(reason);
    }
  });
});

describe("gateway: the key set", () => {
  it("is fetched from identity once and cached, not per request", async () => {
    const jwksCalls = async () => {
      const text = await (await fetch(`http://127.0.0.1:${mesh.services.identity.metricsPort}/metrics`)).text();
      return Number(/grpc_server_handled_total\{[^}]*grpc_method="GetJwks",grpc_code="OK"[^}]*\} (\d+)/.exec(text)?.[1] ?? 0);
    };
    const { token } = await signUp();
    await json("/v1/orders", { token }); // the key is known after this
    const before = await jwksCalls();
    expect(before).toBeGreaterThan(0); // the metric is there: the gateway did fetch the keys
    for (let i = 0; i < 10; i++) expect((await json("/v1/orders", { token })).status).toBe(200);
    expect(await jwksCalls()).toBe(before);
  });
});

describe("gateway: rate limits", () => {
  it("cannot be dodged with a made-up X-Forwarded-For or with bad tokens", async () => {
    const g = await startGateway(await gatewayEnv({ RATE_LIMIT_POINTS: "3", RATE_LIMIT_WINDOW_SECONDS: "60", RATE_LIMIT_BURST: "0", RATE_LIMIT_PREFIX: "gateway:rl:spoof-test" }));
    try {
      const url = `http://127.0.0.1:${g.port}/v1/orders`;
      const statuses = [];
      for (let i = 0; i < 4; i++) {
        statuses.push((await fetch(url, { headers: { "x-forwarded-for": `10.0.0.${i}`, authorization: "Bearer junk" } })).status);
      }
      expect(statuses).toEqual([401, 401, 401, 429]); // one address, whatever it claims; refused tokens count
    } finally {
      await g.stop();
    }
  });

  it("keep serving when Redis is down, limiting each gateway locally", async () => {
    const g = await startGateway(await gatewayEnv({ RATE_LIMIT_POINTS: "3", RATE_LIMIT_WINDOW_SECONDS: "60", RATE_LIMIT_BURST: "0" }));
    await mesh.redis.stop({ keepData: true });
    try {
      const statuses = [];
      for (let i = 0; i < 4; i++) statuses.push((await fetch(`http://127.0.0.1:${g.port}/v1/products/${demoProducts[0]!.id}`)).status);
      expect(statuses).toEqual([200, 200, 200, 429]); // fail open to a local limit, not to no limit
    } finally {
      await mesh.redis.restart();
      await g.stop();
    }
  });
});

describe("gateway: a service going away", () => {
  it("answers 503 quickly while it is down, and recovers when it is back", async () => {
    const { token } = await signUp();
    const svc = mesh.services.notification;
    const port = svc.port;
    await svc.stop();
    const started = Date.now();
    const down = await json("/v1/notifications", { token });
    expect(down.status).toBe(503);
    expect(Date.now() - started).toBeLessThan(3_000);
    const { notification } = await import("../../services/notification/notification.js");
    const { startTestService } = await import("../support/service.js");
    mesh.services.notification = (await startTestService(notification, mesh.pki, { PORT: String(port), NATS_URL: mesh.nats.url })) as never;
    const back = await eventually(() => json("/v1/notifications", { token }), (r) => r.status === 200, 15_000);
    // A fresh service: nothing but, perhaps, the welcome its predecessor had not handled before it
    // stopped (the event stays unacknowledged and comes to the new one). Empty lists are omitted.
    const notes = (back.body as { notifications?: { subject: string }[] }).notifications ?? [];
    expect(notes.filter((n) => n.subject !== "Welcome to ShopMesh")).toEqual([]);
  }, 30_000);
});

describe("gateway: edge policies", () => {
  it("echoes or makes request ids, answers CORS for configured origins only, and limits headers", async () => {
    const g = await startGateway(await gatewayEnv({ CORS_ORIGINS: "https://shop.example" }));
    const url = `http://127.0.0.1:${g.port}`;
    try {
      const given = await fetch(`${url}/v1/products?pageSize=1`, { headers: { "x-request-id": "trace-me-123" } });
      expect(given.headers.get("x-request-id")).toBe("trace-me-123");
      expect((await fetch(`${url}/v1/products?pageSize=1`)).headers.get("x-request-id")).toMatch(/^[0-9a-f-]{36}$/);

      const preflight = await fetch(`${url}/v1/orders`, { method: "OPTIONS", headers: { origin: "https://shop.example", "access-control-request-method": "POST", "access-control-request-headers": "authorization, content-type" } });
      expect(preflight.status).toBe(204);
      expect(preflight.headers.get("access-control-allow-origin")).toBe("https://shop.example");
      const stranger = await fetch(`${url}/v1/products?pageSize=1`, { headers: { origin: "https://evil.example" } });
      expect(stranger.headers.get("access-control-allow-origin")).toBeNull();

      const bigHeader = await fetch(`${url}/healthz`, { headers: { "x-padding": "a".repeat(20_000) } }).catch(() => undefined);
      expect(bigHeader?.status ?? 431).toBe(431);
    } finally {
      await g.stop();
    }
  });

  it("serves /healthz, /readyz and /openapi.json, and /metrics on the metrics port", async () => {
    expect((await json("/healthz")).body).toEqual({ status: "ok" });
    expect((await json("/readyz")).status).toBe(200);
    const metrics = await (await fetch(`http://127.0.0.1:${gateway.metricsPort}/metrics`)).text();
    expect(metrics).toMatch(/http_requests_total\{[^}]*route="rest"/);
    expect(metrics).toMatch(/grpc_client_handled_total/);
    const openapi = await json("/openapi.json");
    expect(openapi.body.openapi).toBe("3.1.0");
  });
});
