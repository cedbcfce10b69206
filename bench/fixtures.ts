// The shop the benchmark runs against, set up through the gateway as people would: stock for
// every product of the catalog, shoppers who signed up and logged in, and a few confirmed orders
// each, for the reads of orders and payments.
import { testCards } from "../services/payment/processor.js";
import { shopHttp, type Answer } from "../test/support/shop-http.js";
import type { Fixture, Shopper } from "./jobs.js";

export const benchAdmin = { email: "admin@bench.test", password: "bench admin password" };
const shipping = { recipientName: "Bench Shopper", addressLines: ["1 Load Street"], city: "Perf", countryCode: "DE" };

const must = (what: string, answer: Answer) => {
  if (answer.status !== 200) throw new Error(`${what}: HTTP ${answer.status} ${JSON.stringify(answer.body)}`);
  return answer.body;
};

export async function prepareShop(gatewayUrl: string, shopperCount: number, ordersEach: number): Promise<Fixture> {
  const { call, persist, placeOrder } = shopHttp(gatewayUrl);
  const admin = must("admin login", await persist(() => call("POST", "/v1/auth/login", benchAdmin)));
  const products = must("ListProducts", await persist(() => call("GET", "/v1/products?pageSize=100"))).products as { id: string }[];
  for (const p of products) must("AdjustStock", await persist(() => call("POST", `/v1/stock/${p.id}:adjust`, { delta: 1_000_000, reason: "benchmark" }, admin.accessToken)));
  const productIds = products.map((p) => p.id);
  const run = Date.now().toString(36);
  const shoppers: Shopper[] = [];
  for (let i = 0; i < shopperCount; i++) {
    const email = `bench${i}-${run}@shop.test`;
    const password = "correct horse battery staple";
    must("register", await persist(() => call("POST", "/v1/auth/register", { email, password, displayName: `Bench ${i}` })));
    const { accessToken, user } = must("login", await persist(() => call("POST", "/v1/auth/login", { email, password })));
    const orderIds: string[] = [];
    for (let j = 0; j < ordersEach; j++) {
      const order = { lines: [{ productId: productIds[(i + j) % productIds.length]!, quantity: 1 }], shippingAddress: shipping };
      orderIds.push(must("place order", await placeOrder(accessToken, order, testCards.success, `bench-${run}-${i}-${j}`)).order.id);
    }
    shoppers.push({ email, password, token: accessToken, userId: user.id, orderIds });
  }
  // Reads of these orders and their payments should find them settled, as most reads of a shop do.
  for (const s of shoppers) for (const id of s.orderIds) await untilConfirmed(call, id, s.token);
  return { productIds, shoppers };
}

/** Asks again while the order is pending; fails on any other outcome, or after 2 minutes. */
async function untilConfirmed(call: ReturnType<typeof shopHttp>["call"], id: string, token: string): Promise<void> {
  const end = Date.now() + 120_000;
  for (;;) {
    const { status, body } = await call("GET", `/v1/orders/${id}`, undefined, token);
    const state = String(body?.order?.status ?? "");
    if (status === 200 && /CONFIRMED/.test(state)) return;
    if ((status === 200 && !/PENDING/.test(state)) || Date.now() > end) throw new Error(`set-up order ${id}: HTTP ${status} ${JSON.stringify(body)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
