// `npm run chaos`: the mesh as an operator runs it (every service and the gateway its own process,
// one PostgreSQL server, nats-server, redis-server), ≥ 1,000 orders through the gateway's REST
// port with a mix of test cards and some cancelled at once, while a service is SIGKILLed every
// 10 s in turn (restarted after a short pause) and NATS once. Then, once every order is terminal,
// the invariants are checked with SQL, and every database, stream and log line is searched for
// card numbers. Prints one line of figures; exits 1 on any violation.
//   CHAOS_ORDERS (1000), CHAOS_CONCURRENCY (12), CHAOS_SEED (random; printed) repeat or resize a run.
import { serviceNames, type ServiceName } from "../../mesh/topology.js";
import { testCards } from "../../services/payment/processor.js";
import { hasCardNumber, scanDatabase, scanStreams, type CardFinding } from "../support/card-scan.js";
import { checkShop, describeViolations, stockTotals, violationCount, type Violations } from "../support/invariants.js";
import { createRng, seedFrom } from "../support/prng.js";
import { shopHttp, type ShopHttp } from "../support/shop-http.js";
import { startProcessMesh, type ProcessMesh, type ProcessName } from "../support/process-mesh.js";

const ORDERS = Number(process.env.CHAOS_ORDERS ?? 1000);
const CONCURRENCY = Number(process.env.CHAOS_CONCURRENCY ?? 12);
const USERS = 16;
const KILL_EVERY_MS = 10_000;
const RESTART_AFTER_MS = 1_500;
const NATS_RESTART_AT_MS = 25_000;
const LOAD_BOUND_MS = 6 * 60_000;
const TERMINAL_BOUND_MS = 90_000;
const seed = seedFrom("CHAOS_SEED");
const rng = createRng(seed);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const seconds = (ms: number) => (ms / 1000).toFixed(1);
const log = (msg: string) => process.stderr.write(`[chaos ${seconds(performance.now() - t0)}s] ${msg}\n`);
const t0 = performance.now();

// ---- card numbers in logs, counted as every line arrives ----
const cardLogLines = new Map<ProcessName, number>();
const onLine = (name: ProcessName, line: string) => {
  if (hasCardNumber(line)) cardLogLines.set(name, (cardLogLines.get(name) ?? 0) + 1);
};

// ---- the gateway, over HTTP ----
/** Answers seen while the faults run, by status (0: no answer), for the progress lines. */
const answers = new Map<number, number>();
let shop: ShopHttp;

interface Shopper {
  email: string;
  token: string;
}

async function signUp(i: number): Promise<Shopper> {
  const email = `chaos${i}-${seed}@shop.test`;
  const password = "correct horse battery";
  const { call, persist } = shop;
  const registered = await persist(() => call("POST", "/v1/auth/register", { email, password, displayName: `Chaos ${i}` }));
  if (registered.status !== 200 && registered.status !== 409) throw new Error(`register: ${registered.status} ${JSON.stringify(registered.body)}`);
  const login = await persist(() => call("POST", "/v1/auth/login", { email, password }));
  if (login.status !== 200) throw new Error(`login: ${login.status} ${JSON.stringify(login.body)}`);
  return { email, token: login.body.accessToken };
}

const shipping = { recipientName: "Chaos Monkey", addressLines: ["1 Crash Lane"], city: "Faultville", countryCode: "DE" };

// Payment keeps a card only until its order's charge is decided (or for a token no order used yet).
const undecided = "SELECT order_id FROM payments WHERE status IN ('pending', 'charging')";
const cardsAllowedInPayment = { payments: "status IN ('pending', 'charging')", payment_methods: `order_id IS NULL OR order_id IN (${undecided})` };

const cards = [...Array(7).fill(testCards.success), testCards.declined, testCards.insufficientFunds, testCards.processingError] as string[];

// ---- the run ----
let mesh: ProcessMesh | undefined;
let exitCode = 1;
try {
  log(`seed ${seed}: starting PostgreSQL, nats-server, redis-server, 6 services and the gateway as processes…`);
  mesh = await startProcessMesh({
    onLine,
    envFor: {
      identity: { ADMIN_EMAIL: "admin@shop.test", ADMIN_PASSWORD: "chaos admin password" },
      // The edge's rate limit is not under test here: one run's shoppers stay far below it.
      gateway: { RATE_LIMIT_POINTS: "1000000", RATE_LIMIT_BURST: "100000" },
    },
  });
  shop = shopHttp(mesh.gatewayUrl, (a) => answers.set(a.status, (answers.get(a.status) ?? 0) + 1));
  const { call, persist } = shop;
  const m = mesh;
  const url = (service: ServiceName) => m.databaseUrl(service);
  log(`mesh up at ${m.gatewayUrl}`);

  // Stock enough for the whole run, but for two products that run out (rejections are part of the mix).
  const admin = await persist(() => call("POST", "/v1/auth/login", { email: "admin@shop.test", password: "chaos admin password" }));
  const products = (await persist(() => call("GET", "/v1/products?pageSize=50"))).body.products as { id: string }[];
  for (const p of products.slice(2)) {
    const adjusted = await persist(() => call("POST", `/v1/stock/${p.id}:adjust`, { delta: 100_000, reason: "chaos run" }, admin.body.accessToken));
    if (adjusted.status !== 200) throw new Error(`AdjustStock: ${adjusted.status} ${JSON.stringify(adjusted.body)}`);
  }
  const startTotals = await stockTotals(url("inventory"));
  const shoppers: Shopper[] = [];
  for (let i = 0; i < USERS; i++) shoppers.push(await signUp(i)); // one at a time: password hashing is the slow part

  log(`${products.length} products, ${shoppers.length} shoppers; placing ${ORDERS} orders, ${CONCURRENCY} in flight, killing a service every ${KILL_EVERY_MS / 1000} s`);

  const placed = new Set<string>();

  // ---- faults: a service SIGKILLed every 10 s in turn, NATS once ----
  let loading = true;
  let kills = 0;
  let natsRestarts = 0;
  let lastRecovery = performance.now();
  const recoveries: Promise<void>[] = [];
  const notRecovered: string[] = [];
  const down = new Set<string>(); // killed and not yet answering again
  let skipped = 0;
  const recovered = (what: string, p: Promise<void>) => {
    down.add(what);
    recoveries.push(p.then(() => void (down.delete(what), (lastRecovery = Math.max(lastRecovery, performance.now()))), (err: Error) => void notRecovered.push(`${what}: ${err.message.split("\n")[0]}`)));
  };
  const progress = () => {
    log(`${placed.size} orders placed; answers so far ${[...answers].sort((a, b) => a[0] - b[0]).map(([s, n]) => `${s || "none"}×${n}`).join(" ")}`);
    answers.clear();
  };
  // CHAOS_VICTIMS (comma-separated) sets the order of the kills, e.g. to kill order last.
  const victims = (process.env.CHAOS_VICTIMS?.split(",") as ServiceName[] | undefined) ?? [...serviceNames.filter((n) => n !== "identity"), "identity"];
  for (const v of victims) if (!serviceNames.includes(v)) throw new Error(`CHAOS_VICTIMS: ${v} is no service`);
  const faults = (async () => {
    const loadStart = performance.now();
    let natsDone = false;
    for (let tick = 1; loading; tick++) {
      while (loading && performance.now() - loadStart < tick * KILL_EVERY_MS) {
        if (!natsDone && down.size === 0 && performance.now() - loadStart >= NATS_RESTART_AT_MS) {
          natsDone = true;
          log("SIGKILL nats-server");
          await m.nats.stop({ keepData: true, signal: "SIGKILL" });
          await sleep(RESTART_AFTER_MS);
          const back = m.nats.restart();
          natsRestarts++;
          recovered("nats-server", back);
          await back;
          log("nats-server back");
        }
        await sleep(100);
      }
      if (!loading) break;
      progress();
      // One fault at a time: while the last victim is still coming back, this tick passes.
      if (down.size > 0) {
        skipped++;
        continue;
      }
      const victim = m.processes[victims[kills % victims.length]!];
      log(`SIGKILL ${victim.name}`);
      await victim.kill("SIGKILL");
      kills++;
      await sleep(RESTART_AFTER_MS);
      victim.start();
      recovered(victim.name, m.waitReady(victim.name, 60_000));
    }
  })();

  // ---- load: orders through the gateway, some cancelled at once ----
  let cancelRequests = 0;
  let refused = 0; // orders the gateway answered with a 4xx (never expected) or never accepted
  const problems: string[] = [];
  let next = 0;
  const loadStart = performance.now();
  const worker = async () => {
    // At least ORDERS orders, and the load goes on until every service has been killed once and NATS restarted.
    const faultsDone = () => kills >= victims.length && natsRestarts > 0;
    while ((placed.size < ORDERS || !faultsDone()) && performance.now() - loadStart < LOAD_BOUND_MS) {
      const i = next++;
      const shopper = shoppers[i % shoppers.length]!;
      const first = rng.int(products.length);
      const lines = [{ productId: products[first]!.id, quantity: 1 + rng.int(3) }];
      if (rng.chance(0.3)) lines.push({ productId: products[(first + 1 + rng.int(products.length - 1)) % products.length]!.id, quantity: 1 + rng.int(2) });
      const card = rng.pick(cards);
      const cancelAtOnce = rng.chance(0.15);
      const created = await shop.placeOrder(shopper.token, { lines, shippingAddress: shipping }, card, `chaos-${seed}-${i}`);
      if (created.status !== 200) {
        refused++;
        if (problems.length < 5) problems.push(`order ${i}: ${created.status} ${JSON.stringify(created.body).slice(0, 200)}`);
        continue;
      }
      const id = created.body.order.id as string;
      placed.add(id);
      if (cancelAtOnce) {
        cancelRequests++;
        const cancelled = await persist(() => call("POST", `/v1/orders/${id}:cancel`, { reason: "changed my mind" }, shopper.token));
        if (cancelled.status >= 500 || cancelled.status === 0) problems.push(`cancel ${id}: ${cancelled.status} ${JSON.stringify(cancelled.body).slice(0, 200)}`);
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  const loadMs = performance.now() - loadStart;
  loading = false;
  await faults;
  log(`load done: ${placed.size} orders in ${seconds(loadMs)} s; waiting for every process to be back…`);
  await Promise.all(Object.values(m.processes).map((p) => (p.running() ? Promise.resolve() : (p.start(), m.waitReady(p.name, 60_000)))));
  await Promise.all(recoveries);
  await Promise.all(serviceNames.map((n) => m.waitReady(n, 60_000)));

  // ---- every order terminal (bounded wait on progress), then the invariants ----
  let terminalAt: number | undefined;
  let lastPending = -1;
  const waitEnd = performance.now() + TERMINAL_BOUND_MS;
  for (;;) {
    const { figures } = await checkShop(url, startTotals);
    if (figures.pending !== lastPending) log(`${figures.pending} orders pending`);
    lastPending = figures.pending;
    if (figures.pending === 0) {
      terminalAt = performance.now();
      break;
    }
    if (performance.now() > waitEnd) break;
    await sleep(250);
  }
  // Compensations (refunds, releases) follow an order's terminal state by a moment: give them until they stop changing.
  let result = await checkShop(url, startTotals);
  for (const end = performance.now() + 20_000; violationCount(result.violations) > 0 && performance.now() < end; ) {
    await sleep(1_000);
    result = await checkShop(url, startTotals);
  }
  const violations: Violations = result.violations;
  const cardFindings: CardFinding[] = [];
  for (const name of serviceNames) cardFindings.push(...(await scanDatabase(url(name), name, name === "payment" ? cardsAllowedInPayment : {})));
  const nc = await m.nats.connect();
  const streams = await scanStreams(nc);
  await nc.close();
  cardFindings.push(...streams.findings);
  for (const [name, lines] of cardLogLines) cardFindings.push({ where: `${name} log`, rows: lines });
  for (const f of cardFindings) violations.set(`card number in ${f.where}`, Array(f.rows).fill("row/message/line"));
  if (placed.size < ORDERS) violations.set("fewer orders placed than asked", [`${placed.size} of ${ORDERS}`]);
  if (notRecovered.length) violations.set("did not come back after a kill", notRecovered);

  const total = violationCount(violations);
  const { figures } = result;
  const terminalAfter = terminalAt === undefined ? "never" : `${seconds(Math.max(0, terminalAt - lastRecovery))}s`;
  console.log(
    `chaos: seed=${seed} orders=${placed.size} confirmed=${figures.confirmed} cancelled=${figures.cancelled} pending=${figures.pending} ` +
      `cancel_requests=${cancelRequests} not_placed=${refused} kills=${kills} kills_skipped=${skipped} nats_restarts=${natsRestarts} load=${seconds(loadMs)}s ` +
      `terminal_after_last_recovery=${terminalAfter} events_scanned=${streams.messages} charged_again=${figures.chargedAgain} ` +
      `violations=${total} duration=${seconds(performance.now() - t0)}s`,
  );
  for (const line of describeViolations(violations)) console.log(`  violation: ${line}`);
  for (const p of problems.slice(0, 5)) console.log(`  problem: ${p}`);
  exitCode = total === 0 ? 0 : 1;
} catch (err) {
  console.error(`chaos run failed: ${(err as Error).stack ?? err}`);
} finally {
  await mesh?.stop();
}
process.exit(exitCode);
