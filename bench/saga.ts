// The order saga under a fixed offered load: orders per second from CreateOrder to CONFIRMED and
// the p50/p99 of that time, with the whole mesh in this process (six services, real nats-server
// and redis-server, embedded databases). Baseline, same run: raw JetStream publish-and-consume of
// the same number of messages at the same rate.
//   npm run bench:saga            (BENCH_RATE=40 orders/s, BENCH_SECONDS=10 by default)
import { fromBinary } from "@bufbuild/protobuf";
import { AckPolicy, nanos } from "nats";
import { v7 as uuidv7 } from "uuid";
import { CatalogService } from "../gen/shop/catalog/v1/catalog_pb.js";
import { InventoryService } from "../gen/shop/inventory/v1/inventory_pb.js";
import { OrderConfirmedSchema } from "../gen/shop/order/v1/events_pb.js";
import { OrderService } from "../gen/shop/order/v1/order_pb.js";
import { PaymentService } from "../gen/shop/payment/v1/payment_pb.js";
import { ensureStreams } from "../mesh/events/events.js";
import { startMesh } from "../test/support/mesh.js";
import { cardToken } from "../test/support/payments.js";

const rate = Number(process.env.BENCH_RATE ?? 40);
const seconds = Number(process.env.BENCH_SECONDS ?? 10);
const total = rate * seconds;

interface Result {
  completed: number;
  perSecond: number;
  p50: number;
  p99: number;
}

function summarize(started: Map<string, number>, finished: Map<string, number>): Result {
  const latencies = [...finished].map(([id, t]) => t - started.get(id)!).sort((a, b) => a - b);
  const first = Math.min(...started.values());
  const last = Math.max(...finished.values());
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { completed: latencies.length, perSecond: latencies.length / ((last - first) / 1000), p50: pct(0.5), p99: pct(0.99) };
}

/** Calls `send(i)` `total` times at `rate` per second (open loop: it does not wait for answers). */
async function offer(send: (i: number) => Promise<unknown>): Promise<void> {
  const start = performance.now();
  const pending: Promise<unknown>[] = [];
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / rate;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    pending.push(send(i));
  }
  await Promise.all(pending);
}

const until = async (done: () => boolean, timeoutMs: number) => {
  const end = Date.now() + timeoutMs;
  while (!done() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
};

console.log(`order saga: ${rate} orders/s offered for ${seconds} s (${total} orders), node ${process.version}; starting the mesh…`);
const mesh = await startMesh();
try {
  // ---- baseline: raw JetStream, same message count and rate ----
  const nc = await mesh.nats.connect();
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();
  await ensureStreams(jsm, "benchmark", ["bench.>"]);
  await jsm.consumers.add("SHOP_BENCHMARK", { durable_name: "bench", ack_policy: AckPolicy.Explicit, ack_wait: nanos(30_000), filter_subject: "bench.msg" });
  const rawStarted = new Map<string, number>();
  const rawFinished = new Map<string, number>();
  const messages = await (await js.consumers.get("SHOP_BENCHMARK", "bench")).consume();
  void (async () => {
    for await (const m of messages) {
      rawFinished.set(m.string(), performance.now());
      m.ack();
    }
  })();
  await offer(async (i) => {
    const id = String(i);
    rawStarted.set(id, performance.now());
    await js.publish("bench.msg", id, { msgID: `bench-${i}` });
  });
  await until(() => rawFinished.size >= total, 30_000);
  await messages.close();
  const raw = summarize(rawStarted, rawFinished);

  // ---- the saga ----
  const adminId = uuidv7();
  const admin = await mesh.as(CatalogService, "catalog", adminId, "customer,admin");
  const { product } = await admin.createProduct({ sku: `BENCH-${Date.now()}`, name: "Bench item", category: "home", price: { amountMinor: 500n, currencyCode: "EUR" } });
  await (await mesh.as(InventoryService, "inventory", adminId, "customer,admin")).adjustStock({ productId: product!.id, delta: 1_000_000, reason: "benchmark" });
  const shopper = uuidv7();
  const [orders, payments] = [await mesh.as(OrderService, "order", shopper), await mesh.as(PaymentService, "payment", shopper)];
  const started = new Map<string, number>();
  const finished = new Map<string, number>();
  const confirmations = nc.subscribe("shop.order.confirmed"); // every stored event also goes to core subscribers
  void (async () => {
    for await (const m of confirmations) {
      const { orderId } = fromBinary(OrderConfirmedSchema, m.data);
      if (started.has(orderId)) finished.set(orderId, performance.now());
    }
  })();
  const request = {
    lines: [{ productId: product!.id, quantity: 1 }],
    shippingAddress: { recipientName: "Bench", addressLines: ["1 Load St"], city: "Perf", countryCode: "DE" },
  };
  let failed = 0;
  await offer(async () => {
    const t0 = performance.now(); // checkout: the card goes to payment, the order carries its token
    try {
      const token = await cardToken(payments);
      const { order } = await orders.createOrder({ ...request, paymentMethod: { token } }, { timeoutMs: 30_000 });
      started.set(order!.id, t0);
    } catch {
      failed++;
    }
  });
  await until(() => finished.size >= started.size, 60_000);
  const saga = summarize(started, finished);
  confirmations.unsubscribe();
  await nc.close();

  const row = (name: string, r: Result) =>
    console.log(`${name.padEnd(44)} ${String(r.completed).padStart(9)} ${r.perSecond.toFixed(1).padStart(10)} ${r.p50.toFixed(1).padStart(9)} ${r.p99.toFixed(1).padStart(9)}`);
  console.log(`\n${"".padEnd(44)} ${"completed".padStart(9)} ${"per s".padStart(10)} ${"p50 ms".padStart(9)} ${"p99 ms".padStart(9)}`);
  row("raw JetStream publish → consume (baseline)", raw);
  row("order saga CreateOrder → CONFIRMED", saga);
  console.log(`\nsaga latency / raw latency at p50: ${(saga.p50 / raw.p50).toFixed(0)}x; orders that failed to be created: ${failed}; not confirmed: ${started.size - finished.size}`);
} finally {
  await mesh.stop();
}
process.exit(0);
