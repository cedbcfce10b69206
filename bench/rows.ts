// The rows of `npm run bench`, each measured against a baseline in the same run:
//   products  GET /v1/products/{id} through the gateway (public, cacheable), closed loop
//   orders    GET /v1/orders/{id}, authenticated (uncacheable), closed loop; on PostgreSQL also
//             against the same read from the bare parts (bench/bare-parts.ts)
//   saga      CreateOrder → CONFIRMED at fixed rates (open loop), then its capacity
//   mixed     mixed edge traffic at fixed rates (open loop), then the highest rate at p99 ≤ 250 ms
import type { RawServer } from "./children.js";
import type { ClosedJob, Failures, Fixture, Latency, MixedOp, NatsAccess, SagaJob } from "./jobs.js";
import type { Measured, Measurer } from "./measure.js";
import type { CountingPostgres, StatementCounts } from "./sql-counter.js";

export type RowName = "products" | "orders" | "saga" | "mixed";

export interface Baseline {
  title: string;
  achieved: number;
  latency: Latency;
  /** CPU µs per request (or message) per process. */
  cpuUs: Record<string, number>;
  /** Requests that failed (counted apart from `achieved`). */
  failed?: number;
}

export interface RowResult {
  row: RowName;
  title: string;
  /** Offered load, in words: "32 in flight", "50 orders/s". */
  load: string;
  /** Offered rate of an open-loop step. */
  rate?: number;
  achieved: number;
  unit: string;
  latency: Latency;
  baseline?: Baseline;
  /** The same work from the bare parts in the mesh's layout (orders row, PostgreSQL): what the architecture costs. */
  bareParts?: Baseline;
  /** CPU µs per unit (request, order, operation) per process, over the measured window. */
  cpuUs: Record<string, number>;
  failed: number;
  failures: Failures;
  /** Cores busy with other work on the machine during the window (noise). */
  otherCores: number;
  /** Whether an open-loop step met its row's capacity criterion. */
  passes?: boolean;
  /** A step of the capacity search (not one of the fixed rates). */
  search?: boolean;
  /** Statements and transactions per created order, all services' databases together (PostgreSQL only). */
  sql?: { statementsPerOrder: number; commitsPerOrder: number; statementsByDatabase: Record<string, number>; top: StatementCounts["top"] };
  detail: unknown;
}

export interface Capacity {
  row: RowName;
  criterion: string;
  /** The highest rate that met it; undefined when none did. */
  rate: number | undefined;
}

export interface BenchOptions {
  seconds: number;
  warmupSeconds: number;
  concurrency: number;
  sagaRates: number[];
  mixedRates: number[];
  /** At most this many steps of a capacity search beyond the fixed rates. */
  searchSteps: number;
}

export interface BenchContext {
  gatewayUrl: string;
  nats: NatsAccess;
  fixture: Fixture;
  raw: RawServer;
  /** The orders row's bare parts (bench/bare-parts.ts), where they run (PostgreSQL only). */
  bareParts?: { port: number };
  measurer: Measurer;
  sql?: Pick<CountingPostgres, "startCounting" | "stopCounting">;
  options: BenchOptions;
  /** The mesh counts as quiet below this many cores. */
  quietCores: number;
  log(line: string): void;
}

/** The mixed edge traffic of issue 10: 48 % catalog reads, 12 % new orders, 1 % logins, 39 % reads of orders, stock, payments, notifications. */
export const mixedWeights: Record<MixedOp, number> = { product: 40, products: 8, order: 12, login: 1, orderRead: 13, stock: 10, payment: 8, notifications: 8 };

const OUTCOME_QUIET_MS = 20_000;

const perUnit = (cpu: Record<string, number>, units: number) => Object.fromEntries(Object.entries(cpu).map(([name, s]) => [name, units > 0 ? (s * 1e6) / units : NaN]));
const port = (url: string) => Number(new URL(url).port);
const f0 = (n: number) => (Number.isFinite(n) ? n.toFixed(0) : "-");

/** The mesh's CPU per unit, all its processes together, in ms. */
export const meshCpuMs = (meshNames: readonly string[], cpuUs: Record<string, number>) => meshNames.reduce((n, name) => n + (cpuUs[name] ?? 0), 0) / 1000;

// ---- closed loop at the edge ----
async function edgeRow(ctx: BenchContext, row: RowName, title: string, requests: { path: string; token?: string }[], bareParts?: { port: number }): Promise<RowResult> {
  const { options, measurer } = ctx;
  const bodies: Record<string, string> = {};
  for (const { path, token } of requests) {
    const res = await fetch(`${ctx.gatewayUrl}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    if (res.status !== 200) throw new Error(`GET ${path}: HTTP ${res.status} ${await res.text()}`);
    bodies[path] = await res.text();
  }
  await ctx.raw.serve(bodies); // the baseline answers exactly what the gateway answered
  for (const { path, token } of bareParts ? requests : []) {
    const res = await fetch(`http://127.0.0.1:${bareParts!.port}${path}`, { headers: token ? { authorization: `Bearer ${token}` } : {} });
    const text = await res.text();
    if (res.status !== 200 || text !== bodies[path]) throw new Error(`the bare parts answered GET ${path} with HTTP ${res.status} ${text.slice(0, 200)}, not the gateway's answer`);
  }
  const job = (p: number) => ({ kind: "closed" as const, port: p, requests, concurrency: options.concurrency, warmupMs: options.warmupSeconds * 1000, durationMs: options.seconds * 1000 });
  const baselineOf = (title: string, m: Measured<ClosedJob>): Baseline => ({ title, achieved: m.result.perSecond, latency: m.result.latency, cpuUs: perUnit(m.cpu, m.result.ok), failed: m.result.failed });
  await measurer.settle(ctx.quietCores);
  const base = await measurer.run(job(ctx.raw.port));
  let bare: Baseline | undefined;
  if (bareParts) {
    await measurer.settle(ctx.quietCores);
    bare = baselineOf("bare parts: node:http → grpc-js → pg", await measurer.run(job(bareParts.port)));
  }
  await measurer.settle(ctx.quietCores);
  const mesh = await measurer.run(job(port(ctx.gatewayUrl)));
  const r = mesh.result;
  ctx.log(
    `${row}: ${f0(r.perSecond)} req/s, p50 ${r.latency.p50.toFixed(1)} ms, p99 ${r.latency.p99.toFixed(1)} ms, ${r.failed} failed; raw ${f0(base.result.perSecond)} req/s, p99 ${base.result.latency.p99.toFixed(1)} ms` +
      (bare ? `; bare parts ${f0(bare.achieved)} req/s, p99 ${bare.latency.p99.toFixed(1)} ms, ${bare.failed} failed` : ""),
  );
  return {
    row,
    title,
    load: `${options.concurrency} in flight`,
    achieved: r.perSecond,
    unit: "req/s",
    latency: r.latency,
    baseline: baselineOf("raw node:http, same JSON", base),
    bareParts: bare,
    cpuUs: perUnit(mesh.cpu, r.ok),
    failed: r.failed,
    failures: r.failures,
    otherCores: mesh.otherCores,
    detail: { mesh: mesh.result, baseline: base.result, windowSeconds: mesh.windowSeconds },
  };
}

export function productRow(ctx: BenchContext): Promise<RowResult> {
  return edgeRow(ctx, "products", "GET /v1/products/{id} (public, cacheable)", ctx.fixture.productIds.map((id) => ({ path: `/v1/products/${id}` })));
}

export function orderReadRow(ctx: BenchContext): Promise<RowResult> {
  const requests = ctx.fixture.shoppers.flatMap((s) => s.orderIds.map((id) => ({ path: `/v1/orders/${id}`, token: s.token })));
  return edgeRow(ctx, "orders", "GET /v1/orders/{id} (authenticated, uncacheable)", requests, ctx.bareParts);
}

// ---- open loop, fixed rates, then the capacity ----
/**
 * Runs `step` at each fixed rate, then searches the highest rate that passes: upwards by half
 * again while every rate passes, then halving the gap between the highest pass and the lowest
 * failure, until it is within 10 % (or `maxSteps` are spent).
 */
async function findCapacity(fixed: readonly number[], step: (rate: number, search: boolean) => Promise<boolean>, maxSteps: number): Promise<number | undefined> {
  const outcome = new Map<number, boolean>();
  for (const rate of fixed) outcome.set(rate, await step(rate, false));
  const bounds = () => {
    const hi = Math.min(...[...outcome].filter(([, ok]) => !ok).map(([r]) => r));
    const lo = Math.max(0, ...[...outcome].filter(([r, ok]) => ok && r < hi).map(([r]) => r));
    return { lo, hi };
  };
  for (let n = 0; n < maxSteps; n++) {
    const { lo, hi } = bounds();
    const next = Number.isFinite(hi) ? Math.round((lo + hi) / 2) : Math.round(lo * 1.5);
    if ((Number.isFinite(hi) && hi - lo <= Math.max(2, lo * 0.1)) || next <= lo || next >= hi || outcome.has(next)) break;
    outcome.set(next, await step(next, true));
  }
  const { lo } = bounds();
  return lo > 0 ? lo : undefined;
}

async function jetstreamBaseline(ctx: BenchContext, rate: number): Promise<Baseline> {
  await ctx.measurer.settle(ctx.quietCores);
  const m = await ctx.measurer.run({ kind: "jetstream", rate, durationMs: ctx.options.seconds * 1000, nats: ctx.nats, quietMs: OUTCOME_QUIET_MS });
  return { title: "raw JetStream publish → consume", achieved: m.result.perSecond, latency: m.result.latency, cpuUs: perUnit(m.cpu, m.result.consumed) };
}

async function sagaStep(ctx: BenchContext, rate: number, search: boolean): Promise<RowResult> {
  await ctx.measurer.settle(ctx.quietCores);
  await ctx.sql?.startCounting();
  const m = await ctx.measurer.run(sagaJob(ctx, rate));
  const counts = await ctx.sql?.stopCounting();
  const r = m.result;
  const failures: Failures = { ...r.createFailures };
  for (const [reason, n] of Object.entries(r.cancelReasons)) failures[`cancelled: ${reason}`] = n;
  if (r.unresolved) failures[`neither confirmed nor cancelled ${OUTCOME_QUIET_MS / 1000} s after the last outcome`] = r.unresolved;
  const sum = (xs: Record<string, number>) => Object.values(xs).reduce((a, b) => a + b, 0);
  const cpuUs = perUnit(m.cpu, r.confirmed);
  const row: RowResult = {
    row: "saga",
    title: "order saga, checkout → CONFIRMED",
    load: `${rate} orders/s`,
    rate,
    achieved: r.perSecond,
    unit: "orders/s",
    latency: r.latency,
    cpuUs,
    failed: r.offered - r.confirmed,
    failures,
    otherCores: m.otherCores,
    passes: r.latency.p99 < 1_000 && r.confirmed === r.offered,
    search,
    sql: counts && r.created ? { statementsPerOrder: sum(counts.statements) / r.created, commitsPerOrder: sum(counts.commits) / r.created, statementsByDatabase: counts.statements, top: counts.top } : undefined,
    detail: { ...r, windowSeconds: m.windowSeconds },
  };
  ctx.log(
    `saga ${rate}/s${search ? " (capacity search)" : ""}: ${r.confirmed}/${r.offered} confirmed, ${r.perSecond.toFixed(1)} orders/s, p50 ${f0(r.latency.p50)} ms, p99 ${f0(r.latency.p99)} ms, ` +
      `mesh CPU ${meshCpuMs(ctx.measurer.meshNames, cpuUs).toFixed(1)} ms/order${row.sql ? `, ${row.sql.statementsPerOrder.toFixed(1)} statements/order` : ""}${row.passes ? "" : " — fails p99 < 1 s and all confirmed"}` +
      `; p50/p99 ms by step: ${Object.entries(r.hops).map(([hop, l]) => `${hop} ${f0(l.p50)}/${f0(l.p99)}`).join(", ")}`,
  );
  return row;
}

const sagaJob = (ctx: BenchContext, rate: number): SagaJob => ({
  kind: "saga", port: port(ctx.gatewayUrl), rate, durationMs: ctx.options.seconds * 1000, fixture: ctx.fixture, nats: ctx.nats, quietMs: OUTCOME_QUIET_MS,
});

/** The first saga step after start-up ran ~10× slower at p50 than the same step repeated (JIT, pools growing): warm the saga first. */
async function warmSaga(ctx: BenchContext): Promise<void> {
  const rate = Math.max(1, Math.round(Math.min(...ctx.options.sagaRates) / 2));
  await ctx.measurer.settle(ctx.quietCores);
  const { result: r } = await ctx.measurer.run(sagaJob(ctx, rate));
  ctx.log(`saga warm-up at ${rate}/s (not counted): ${r.confirmed}/${r.offered} confirmed, p50 ${f0(r.latency.p50)} ms, p99 ${f0(r.latency.p99)} ms`);
}

export async function sagaRows(ctx: BenchContext): Promise<{ rows: RowResult[]; capacity: Capacity }> {
  const rows: RowResult[] = [];
  await warmSaga(ctx);
  const capacity = await findCapacity(
    ctx.options.sagaRates,
    async (rate, search) => {
      const baseline = search ? undefined : await jetstreamBaseline(ctx, rate);
      const row = await sagaStep(ctx, rate, search);
      rows.push({ ...row, baseline });
      return row.passes!;
    },
    ctx.options.searchSteps,
  );
  const atCapacity = rows.find((r) => r.rate === capacity);
  if (atCapacity && !atCapacity.baseline) atCapacity.baseline = await jetstreamBaseline(ctx, capacity!);
  return { rows, capacity: { row: "saga", criterion: "p99 < 1 s and every order confirmed", rate: capacity } };
}

export async function mixedRows(ctx: BenchContext): Promise<{ rows: RowResult[]; capacity: Capacity }> {
  const rows: RowResult[] = [];
  const step = async (rate: number, search: boolean) => {
    await ctx.measurer.settle(ctx.quietCores);
    const m = await ctx.measurer.run({
      kind: "mixed", port: port(ctx.gatewayUrl), rate, weights: mixedWeights, fixture: ctx.fixture, warmupMs: ctx.options.warmupSeconds * 1000, durationMs: ctx.options.seconds * 1000,
    });
    const r = m.result;
    const cpuUs = perUnit(m.cpu, r.perSecond * m.windowSeconds);
    const passes = r.latency.p99 <= 250 && r.failed === 0;
    ctx.log(
      `mixed ${rate}/s${search ? " (capacity search)" : ""}: ${r.perSecond.toFixed(1)} ops/s (${r.httpPerSecond.toFixed(1)} HTTP req/s), p50 ${f0(r.latency.p50)} ms, p99 ${f0(r.latency.p99)} ms, ${r.failed} failed` +
        `${passes ? "" : " — fails p99 ≤ 250 ms with no failure"}`,
    );
    rows.push({
      row: "mixed", title: "mixed edge traffic", load: `${rate} ops/s`, rate, achieved: r.perSecond, unit: "ops/s", latency: r.latency, cpuUs,
      failed: r.failed, failures: r.failures, otherCores: m.otherCores, passes, search, detail: { ...r, windowSeconds: m.windowSeconds },
    });
    return passes;
  };
  const rate = await findCapacity(ctx.options.mixedRates, step, ctx.options.searchSteps);
  return { rows, capacity: { row: "mixed", criterion: "p99 ≤ 250 ms and no failure", rate } };
}
