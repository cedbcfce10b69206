// A whole order through the gateway with most of the mesh behind sidecars, as in a pod or a
// compose namespace: the gateway, identity, inventory, order and notification run with
// MESH_TRANSPORT=sidecar behind test sidecars (real mTLS between sidecars, plaintext h2c on
// loopback to the apps), while catalog and payment still speak mTLS themselves. So order (behind a
// sidecar) calls catalog (direct), the gateway's sidecar calls both kinds, and the saga's events
// run as always over NATS.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGateway, type RunningGateway } from "../../gateway/gateway.js";
import { publicServices } from "../../gateway/upstreams.js";
import { demoProducts } from "../../services/catalog/demo.js";
import { eventually } from "../support/eventually.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { shopHttp, type ShopHttp } from "../support/shop-http.js";
import { startTestSidecar, type TestSidecar } from "../support/sidecar-proxy.js";

let mesh: TestMesh;
let gatewaySidecar: TestSidecar;
let gateway: RunningGateway;
let shop: ShopHttp;

beforeAll(async () => {
  mesh = await startMesh({ sidecars: ["identity", "inventory", "order", "notification"] });
  // The gateway's sidecar has outbound listeners only: one per public service.
  gatewaySidecar = await startTestSidecar(mesh.pki, "gateway", { appPort: 0, callers: [] });
  const addresses: Record<string, string> = {};
  for (const [, name] of publicServices) addresses[`${name.toUpperCase()}_ADDRESSES`] = await gatewaySidecar.outbound(name, mesh.services[name].address);
  gateway = await startGateway({
    MESH_TRANSPORT: "sidecar", PORT: "0", METRICS_PORT: "0", LOG_LEVEL: "silent",
    CERTS_DIR: await mesh.pki.dir(["gateway"]), REDIS_URL: mesh.redis.url, ...addresses,
  });
  shop = shopHttp(`http://127.0.0.1:${gateway.port}`);
}, 120_000);

afterAll(async () => {
  await gateway?.stop();
  await gatewaySidecar?.close();
  await mesh?.stop();
});

describe("an order through the gateway, with services behind sidecars", () => {
  it("register → login → order → CONFIRMED → notification, every call through the sidecars", async () => {
    const email = `sidecar-${Date.now()}@example.com`;
    expect((await shop.call("POST", "/v1/auth/register", { email, password: "correct horse", displayName: "Pat" })).status).toBe(200);
    const login = await shop.call("POST", "/v1/auth/login", { email, password: "correct horse" });
    expect(login.status).toBe(200);
    const token = login.body.accessToken;

    const product = demoProducts[0]!;
    const order = { lines: [{ productId: product.id, quantity: 2 }], shippingAddress: { recipientName: "Pat", addressLines: ["1 Main St"], city: "Town", countryCode: "DE" } };
    const created = await shop.placeOrder(token, order, "4242424242424242", `sidecar-${Date.now()}`);
    expect(created.status).toBe(200);
    const id = created.body.order.id;

    const confirmed = await eventually(() => shop.call("GET", `/v1/orders/${id}`, undefined, token), (r) => r.body.order?.status === "ORDER_STATUS_CONFIRMED");
    expect(confirmed.body.order.total).toEqual({ amountMinor: String(2n * product.priceMinor), currencyCode: "EUR" });
    const notes = await eventually(() => shop.call("GET", "/v1/notifications", undefined, token), (r) => r.body.notifications?.some((n: any) => n.subject.includes(id)));
    expect(notes.status).toBe(200);

    // The gateway's calls went through its sidecar, which never had to answer for an upstream.
    expect(gatewaySidecar.counters.forwarded).toBeGreaterThanOrEqual(4);
    expect(gatewaySidecar.counters.localReplies).toBe(0);
  });

  it("reports the mesh ready through the sidecars (health reaches every service)", async () => {
    const ready = await fetch(`http://127.0.0.1:${gateway.port}/readyz`);
    expect(ready.status).toBe(200);
  });
});
