// The load generator, in a process of its own (forked by bench/all.ts) so that its CPU time is not
// counted as the mesh's. It runs one job at a time from its parent (bench/jobs.ts) and answers with
// the figures. It tells the parent when the measured window starts and ends, as it happens, so
// the parent reads every process's CPU time over exactly that window.
import { randomUUID } from "node:crypto";
import { Agent, request } from "node:http";
import { fromBinary } from "@bufbuild/protobuf";
import { AckPolicy, connect, type NatsConnection } from "nats";
import { StockReservedSchema } from "../gen/shop/inventory/v1/events_pb.js";
import { OrderCancelledSchema, OrderConfirmedSchema, OrderCreatedSchema } from "../gen/shop/order/v1/events_pb.js";
import { PaymentCapturedSchema } from "../gen/shop/payment/v1/events_pb.js";
import { loadTls } from "../mesh/certs.js";
import { ensureStreams } from "../mesh/events/events.js";
import { natsConnectOptions, natsOperator } from "../mesh/events/nats-config.js";
import { testCards } from "../services/payment/processor.js";
import type { ClosedJob, ClosedResult, Fixture, Job, JetStreamJob, JetStreamResult, LoadMessage, MixedJob, MixedOp, NatsAccess, OpenResult, SagaJob, SagaResult } from "./jobs.js";
import { FailureTally, latencyOf } from "./stats.js";

const send = (message: LoadMessage) => process.send!(message);
const mark = (edge: "start" | "end") => send({ type: "window", edge });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)]!;

// ---- HTTP/1.1 with keep-alive, as a browser or an API client talks to the gateway ----
// An idle socket is closed here after 4 s, before the gateway closes it after its 5 s keep-alive
// timeout: without an agent timeout Node ignores the server's Keep-Alive hint, and a request sent
// on a socket the server was closing at that moment failed with ECONNRESET (13 of 1,280 checkouts
// once, in the step after a quiet pause between rates).
const agent = new Agent({ keepAlive: true, maxSockets: 512, maxFreeSockets: 512, timeout: 4_000 });
const REQUEST_TIMEOUT_MS = 30_000;

interface Answer {
  status: number;
  text: string;
}

function http(port: number, method: string, path: string, opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    if (payload !== undefined) Object.assign(headers, { "content-type": "application/json", "content-length": String(Buffer.byteLength(payload)) });
    const req = request({ host: "127.0.0.1", port, method, path, agent, headers, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString() }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer in ${REQUEST_TIMEOUT_MS / 1000} s`)));
    req.on("error", reject);
    req.end(payload);
  });
}

/** A failure's reason with ids taken out, so that failures of one kind count together. */
const reasonOf = (what: string, answer: Answer) =>
  `${what}: HTTP ${answer.status} ${answer.text.slice(0, 200).replace(/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi, "<id>")}`;
class Failed extends Error {}
/** The answer's JSON when its status is 200; else throws with the reason. */
function expectOk(what: string, answer: Answer): any {
  if (answer.status !== 200) throw new Failed(reasonOf(what, answer));
  return answer.text ? JSON.parse(answer.text) : undefined;
}
const messageOf = (err: unknown) => (err instanceof Failed ? err.message : `${(err as Error).message ?? err}`);

// ---- closed loop ----
async function closed(job: ClosedJob): Promise<ClosedResult> {
  let next = 0;
  const phase = async (ms: number) => {
    const latencies: number[] = [];
    const failures = new FailureTally();
    const end = performance.now() + ms;
    const caller = async () => {
      while (performance.now() < end) {
        const { path, token } = job.requests[next++ % job.requests.length]!;
        const began = performance.now();
        try {
          const answer = await http(job.port, "GET", path, { token });
          if (answer.status === 200) latencies.push(performance.now() - began);
          else failures.add(reasonOf(`GET ${path.split("/").slice(0, 3).join("/")}`, answer));
        } catch (err) {
          failures.add(messageOf(err));
        }
      }
    };
    const began = performance.now();
    await Promise.all(Array.from({ length: job.concurrency }, caller));
    return { latencies, failures, elapsedMs: performance.now() - began };
  };
  await phase(job.warmupMs);
  mark("start");
  const { latencies, failures, elapsedMs } = await phase(job.durationMs);
  mark("end");
  return { ok: latencies.length, perSecond: latencies.length / (elapsedMs / 1000), latency: latencyOf(latencies), failed: failures.total, failures: failures.counts };
}

// ---- open loop ----
/** Calls `launch(due)` `rate` times a second for `ms`, each on its schedule, never waiting for answers. */
async function onSchedule(rate: number, ms: number, launch: (due: number) => void): Promise<void> {
  const start = performance.now();
  const count = Math.round((ms * rate) / 1000);
  const dueOf = (i: number) => start + (i * 1000) / rate;
  for (let i = 0; i < count; ) {
    const now = performance.now();
    for (; i < count && dueOf(i) <= now; i++) launch(dueOf(i)); // behind schedule: catch up at once
    if (i < count) await sleep(dueOf(i) - performance.now());
  }
}

const shipping = { recipientName: "Bench Shopper", addressLines: ["1 Load Street"], city: "Perf", countryCode: "DE" };

/** A checkout as the gateway's REST clients do it: the card to payment, the order with its token. Returns the new order's id. */
async function placeOrder(port: number, fixture: Fixture): Promise<string> {
  const shopper = pick(fixture.shoppers);
  const method = expectOk("POST /v1/payment-methods", await http(port, "POST", "/v1/payment-methods", { token: shopper.token, body: { cardNumber: testCards.success } }));
  // One or two lines over the catalog: not every order contends for one stock row.
  const first = pick(fixture.productIds);
  const second = pick(fixture.productIds);
  const lines = [{ productId: first, quantity: 1 }, ...(second !== first && Math.random() < 0.5 ? [{ productId: second, quantity: 1 }] : [])];
  const created = expectOk(
    "POST /v1/orders",
    await http(port, "POST", "/v1/orders", { token: shopper.token, body: { lines, shippingAddress: shipping, paymentMethod: { token: method.paymentMethod.token } }, headers: { "idempotency-key": randomUUID() } }),
  );
  return created.order.id;
}

/** Each operation of the mixed traffic; resolves with the number of HTTP requests it made. */
function mixedOps(port: number, fixture: Fixture): Record<MixedOp, () => Promise<number>> {
  const get = async (path: string, token?: string) => (expectOk(`GET ${path.replace(/\/[0-9a-f-]{36}/g, "/{id}")}`, await http(port, "GET", path, { token })), 1);
  const withOrder = () => {
    const shopper = pick(fixture.shoppers.filter((s) => s.orderIds.length));
    return { shopper, orderId: pick(shopper.orderIds) };
  };
  return {
    product: () => get(`/v1/products/${pick(fixture.productIds)}`),
    products: () => get("/v1/products?pageSize=20"),
    order: async () => (await placeOrder(port, fixture), 2),
    login: async () => {
      const { email, password } = pick(fixture.shoppers);
      expectOk("POST /v1/auth/login", await http(port, "POST", "/v1/auth/login", { body: { email, password } }));
      return 1;
    },
    orderRead: () => {
      const { shopper, orderId } = withOrder();
      return get(`/v1/orders/${orderId}`, shopper.token);
    },
    stock: () => get(`/v1/stock/${pick(fixture.productIds)}`),
    payment: () => {
      const { shopper, orderId } = withOrder();
      return get(`/v1/orders/${orderId}/payment`, shopper.token);
    },
    notifications: () => get("/v1/notifications", pick(fixture.shoppers).token),
  };
}

function drawer(weights: Record<MixedOp, number>): () => MixedOp {
  const entries = Object.entries(weights) as [MixedOp, number][];
  const total = entries.reduce((n, [, w]) => n + w, 0);
  return () => {
    let r = Math.random() * total;
    for (const [op, w] of entries) if ((r -= w) < 0) return op;
    return entries.at(-1)![0];
  };
}

/** Past this many operations in flight the generator sends no more (counted as failures): an overloaded mesh must not exhaust the generator. */
const MAX_IN_FLIGHT = 2_000;

async function mixed(job: MixedJob): Promise<OpenResult> {
  const ops = mixedOps(job.port, job.fixture);
  const draw = drawer(job.weights);
  const failures = new FailureTally();
  const latencies: number[] = [];
  const byOp = new Map<MixedOp, number[]>();
  const inFlight = new Set<Promise<void>>();
  let window = { start: Infinity, end: Infinity };
  let sent = 0;
  let okInWindow = 0;
  let httpInWindow = 0;
  const launch = (due: number, measured: boolean) => {
    if (inFlight.size >= MAX_IN_FLIGHT) return void (measured && (sent++, failures.add(`not sent: ${MAX_IN_FLIGHT} operations already in flight`)));
    if (measured) sent++;
    const op = draw();
    const running = ops[op]().then(
      (requests) => {
        const now = performance.now();
        if (now >= window.start && now <= window.end) (okInWindow++, (httpInWindow += requests));
        if (!measured) return;
        latencies.push(now - due);
        const ofOp = byOp.get(op) ?? [];
        if (!ofOp.length) byOp.set(op, ofOp);
        ofOp.push(now - due);
      },
      (err) => void (measured && failures.add(messageOf(err))),
    );
    inFlight.add(running);
    void running.finally(() => inFlight.delete(running));
  };
  await onSchedule(job.rate, job.warmupMs, (due) => launch(due, false));
  window = { start: performance.now(), end: performance.now() + job.durationMs };
  mark("start");
  await onSchedule(job.rate, job.durationMs, (due) => launch(due, true));
  mark("end");
  await Promise.all(inFlight);
  const seconds = job.durationMs / 1000;
  return {
    sent,
    ok: latencies.length,
    perSecond: okInWindow / seconds,
    httpPerSecond: httpInWindow / seconds,
    latency: latencyOf(latencies),
    latencyWithoutLogins: latencyOf([...byOp].flatMap(([op, ms]) => (op === "login" ? [] : ms))),
    byOp: Object.fromEntries([...byOp].map(([op, ms]) => [op, latencyOf(ms)])),
    failed: failures.total,
    failures: failures.counts,
  };
}

// ---- the saga, and its baseline ----
async function natsConnection({ url, certsDir }: NatsAccess): Promise<NatsConnection> {
  return connect({ servers: url, timeout: 5_000, ...natsConnectOptions(natsOperator, await loadTls(certsDir, natsOperator)) });
}

/** Waits until `done()` or until `lastProgress()` is `quietMs` old. */
async function untilDoneOrQuiet(done: () => boolean, lastProgress: () => number, quietMs: number): Promise<void> {
  while (!done() && performance.now() - lastProgress() < quietMs) await sleep(20);
}

async function saga(job: SagaJob): Promise<SagaResult> {
  const nc = await natsConnection(job.nats);
  try {
    // Outcomes by order id from the moment they arrive: one may come before its CreateOrder answer.
    const outcomes = new Map<string, { at: number; reason?: string }>();
    const started = new Map<string, number>();
    let lastProgress = performance.now();
    const settle = (orderId: string, reason?: string) => {
      outcomes.set(orderId, { at: performance.now(), reason });
      if (started.has(orderId)) lastProgress = performance.now();
    };
    nc.subscribe("shop.order.confirmed", { callback: (err, m) => !err && settle(fromBinary(OrderConfirmedSchema, m.data).orderId) });
    // Where an order's time goes: when each step's event is seen, by order id.
    const steps = { created: new Map<string, number>(), reserved: new Map<string, number>(), captured: new Map<string, number>() };
    const seen = (map: Map<string, number>, schema: typeof OrderCreatedSchema | typeof StockReservedSchema | typeof PaymentCapturedSchema) =>
      (err: unknown, m: { data: Uint8Array }) => !err && map.set(fromBinary(schema, m.data).orderId, performance.now());
    nc.subscribe("shop.order.created", { callback: seen(steps.created, OrderCreatedSchema) });
    nc.subscribe("shop.stock.reserved", { callback: seen(steps.reserved, StockReservedSchema) });
    nc.subscribe("shop.payment.captured", { callback: seen(steps.captured, PaymentCapturedSchema) });
    nc.subscribe("shop.order.cancelled", {
      callback: (err, m) => {
        if (err) return;
        const event = fromBinary(OrderCancelledSchema, m.data);
        settle(event.orderId, event.reason || "(no reason given)");
      },
    });
    await nc.flush(); // the subscriptions are in place before the first order
    const createFailures = new FailureTally();
    const checkouts: Promise<void>[] = [];
    let first = Infinity;
    mark("start");
    await onSchedule(job.rate, job.durationMs, (due) => {
      first = Math.min(first, due);
      checkouts.push(
        placeOrder(job.port, job.fixture).then(
          (id) => void started.set(id, due),
          (err) => void createFailures.add(messageOf(err)),
        ),
      );
    });
    await Promise.all(checkouts);
    lastProgress = Math.max(lastProgress, performance.now());
    const unresolved = () => [...started.keys()].filter((id) => !outcomes.has(id)).length;
    await untilDoneOrQuiet(() => unresolved() === 0, () => lastProgress, job.quietMs);
    mark("end");
    const latencies: number[] = [];
    const hops = { checkout: [] as number[], reserve: [] as number[], charge: [] as number[], confirm: [] as number[] };
    const cancelReasons = new FailureTally();
    let last = first;
    for (const [id, due] of started) {
      const outcome = outcomes.get(id);
      if (!outcome) continue;
      if (outcome.reason !== undefined) cancelReasons.add(outcome.reason);
      else (latencies.push(outcome.at - due), (last = Math.max(last, outcome.at)));
      const [created, reserved, captured] = [steps.created.get(id), steps.reserved.get(id), steps.captured.get(id)];
      if (outcome.reason === undefined && created && reserved && captured) {
        hops.checkout.push(created - due);
        hops.reserve.push(reserved - created);
        hops.charge.push(captured - reserved);
        hops.confirm.push(outcome.at - captured);
      }
    }
    return {
      offered: checkouts.length,
      created: started.size,
      confirmed: latencies.length,
      cancelled: cancelReasons.total,
      unresolved: unresolved(),
      perSecond: latencies.length / ((last - first) / 1000),
      latency: latencyOf(latencies),
      hops: Object.fromEntries(Object.entries(hops).map(([hop, ms]) => [hop, latencyOf(ms)])) as SagaResult["hops"],
      createFailures: createFailures.counts,
      cancelReasons: cancelReasons.counts,
    };
  } finally {
    await nc.close();
  }
}

let jetstreamRuns = 0;

async function jetstream(job: JetStreamJob): Promise<JetStreamResult> {
  const nc = await natsConnection(job.nats);
  const stream = "SHOP_BENCHMARK";
  const durable = `bench-${process.pid}-${++jetstreamRuns}`;
  const subject = `bench.${durable}`;
  try {
    const jsm = await nc.jetstreamManager();
    await ensureStreams(jsm, "benchmark", ["bench.>"], { deadLetters: false });
    await jsm.consumers.add(stream, { durable_name: durable, ack_policy: AckPolicy.Explicit, filter_subject: subject });
    const js = nc.jetstream();
    const started = new Map<string, number>();
    const latencies: number[] = [];
    const failures = new FailureTally();
    let lastProgress = performance.now();
    const messages = await (await js.consumers.get(stream, durable)).consume();
    const consuming = (async () => {
      for await (const m of messages) {
        const due = started.get(m.string());
        if (due !== undefined) latencies.push(performance.now() - due);
        lastProgress = performance.now();
        m.ack();
      }
    })();
    const publishes: Promise<unknown>[] = [];
    let n = 0;
    const first = performance.now();
    mark("start");
    await onSchedule(job.rate, job.durationMs, (due) => {
      const id = String(n++);
      started.set(id, due);
      publishes.push(js.publish(subject, id, { msgID: `${durable}-${id}` }).catch((err) => failures.add((err as Error).message)));
    });
    await Promise.all(publishes);
    await untilDoneOrQuiet(() => latencies.length >= started.size - failures.total, () => lastProgress, job.quietMs);
    const last = lastProgress;
    mark("end");
    await messages.close();
    await consuming;
    await jsm.consumers.delete(stream, durable);
    return { offered: n, consumed: latencies.length, perSecond: latencies.length / ((last - first) / 1000), latency: latencyOf(latencies), failures: failures.counts };
  } finally {
    await nc.close();
  }
}

const run = (job: Job): Promise<unknown> => {
  switch (job.kind) {
    case "closed":
      return closed(job);
    case "mixed":
      return mixed(job);
    case "saga":
      return saga(job);
    case "jetstream":
      return jetstream(job);
  }
};

process.on("message", (job: Job) => {
  run(job).then(
    (result) => send({ type: "done", result }),
    (err: Error) => send({ type: "error", message: err.stack ?? String(err) }),
  );
});
process.on("disconnect", () => process.exit(0)); // the parent is gone
