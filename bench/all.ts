// `npm run bench`: ShopMesh measured the way people run it. A copy of the repository built as
// `npm start` builds it (bench/built-copy.ts); the services from those bundles in both of the
// launcher's layouts (launcher/layout.ts), one after the other in the same run: all six in one host
// process, then each its own; the gateway its own process; one PostgreSQL server with a database per service (or PGlite inside each
// service), real nats-server and redis-server; the load generator in a process of its own
// (bench/loadgen.ts), and each row's baseline measured in the same run by the same generator.
// CPU time and memory of every process come from /proc over each measured window (bench/proc.ts).
// Rows (bench/rows.ts): products, orders (edge reads, closed loop), saga (fixed rates, then its
// capacity), mixed (edge traffic at fixed rates, then its capacity); memory of every process.
// Prints markdown tables and writes every figure to .data/bench/<date>-<layout>.json.
//
//   npm run bench
//   BENCH_DATABASE=postgres|pglite|both   (postgres)
//   BENCH_LAYOUT=combined|processes|both  (both: combined, then processes)
//   BENCH_ROWS=products,orders,saga,mixed (all)
//   BENCH_SECONDS=10  BENCH_WARMUP_SECONDS=2  BENCH_CONCURRENCY=32
//   BENCH_SAGA_RATES=25,50,75  BENCH_MIXED_RATES=25,50,100  BENCH_SEARCH_STEPS=4  BENCH_SHOPPERS=8
//   BENCH_REF=<commit>   measure that commit instead of the work tree
//   BENCH_NODE_ARGS="--max-semi-space-size=2"   node's flags for all the mesh's processes (default: the launcher's, per process)
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { natsOperator } from "../mesh/events/nats-config.js";
import { serviceNames } from "../mesh/topology.js";
import { startProcessMesh } from "../test/support/process-mesh.js";
import { builtCopy, type BuiltCopy } from "./built-copy.js";
import { LoadGenerator, startBareParts, startRawServer, type BareParts } from "./children.js";
import { benchAdmin, prepareShop } from "./fixtures.js";
import { Measurer } from "./measure.js";
import { comparison, layoutName, markdown, runName, writeJson, type Layout, type LayoutRun, type ProcessLayout } from "./report.js";
import { mixedRows, orderReadRow, productRow, sagaRows, type BenchContext, type BenchOptions, type Capacity, type RowName, type RowResult } from "./rows.js";
import { startCountingPostgres, type CountingPostgres } from "./sql-counter.js";
import { layouts as launcherLayouts } from "../launcher/layout.js";
import { processNodeFlags } from "../launcher/node-flags.js";

const numbers = (value: string | undefined, fallback: number[]) => (value ? value.split(",").map(Number).filter((n) => n > 0) : fallback);
const options: BenchOptions = {
  seconds: Number(process.env.BENCH_SECONDS ?? 10),
  warmupSeconds: Number(process.env.BENCH_WARMUP_SECONDS ?? 2),
  concurrency: Number(process.env.BENCH_CONCURRENCY ?? 32),
  sagaRates: numbers(process.env.BENCH_SAGA_RATES, [25, 50, 75]),
  mixedRates: numbers(process.env.BENCH_MIXED_RATES, [25, 50, 100]),
  searchSteps: Number(process.env.BENCH_SEARCH_STEPS ?? 4),
};
const shopperCount = Number(process.env.BENCH_SHOPPERS ?? 8);
const allRows: RowName[] = ["products", "orders", "saga", "mixed"];
const wanted = new Set((process.env.BENCH_ROWS ?? allRows.join(",")).split(",").map((r) => r.trim()).filter((r) => r !== "memory"));
for (const r of wanted) if (!allRows.includes(r as RowName)) throw new Error(`BENCH_ROWS: no row "${r}" (rows: ${allRows.join(", ")}, memory)`);
const database = process.env.BENCH_DATABASE ?? "postgres";
const layouts: Layout[] = database === "both" ? ["postgres", "pglite"] : database === "pglite" ? ["pglite"] : database === "postgres" ? ["postgres"] : [];
if (!layouts.length) throw new Error(`BENCH_DATABASE: postgres, pglite or both, not "${database}"`);
// A list runs them in its order ("processes,combined"), to see drift of a shared machine.
const processLayout = process.env.BENCH_LAYOUT ?? "both";
const processLayouts = (processLayout === "both" ? "combined,processes" : processLayout).split(",").map((l) => l.trim()) as ProcessLayout[];
if (!processLayouts.every((l) => (launcherLayouts as readonly string[]).includes(l))) throw new Error(`BENCH_LAYOUT: combined, processes, both or a list of them, not "${processLayout}"`);

/** Node's flags for every process of the mesh: by default the launcher's, per process (launcher/node-flags.ts; BENCH_NODE_ARGS="" for none). */
const nodeArgs = process.env.BENCH_NODE_ARGS === undefined ? undefined : process.env.BENCH_NODE_ARGS.split(" ").filter(Boolean);
/** Quiet means below this much CPU for the mesh: an idle PGlite service polls at ~3–4 % of a core. */
const QUIET_CORES: Record<Layout, number> = { postgres: 0.2, pglite: 0.5 };

const began = performance.now();
const log = (line: string) => console.log(`[${((performance.now() - began) / 1000).toFixed(0).padStart(4)} s] ${line}`);

/** The pid of the one process whose command line passes `match`. */
function findPid(match: (cmdline: string) => boolean): number | undefined {
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (match(readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").join(" "))) return Number(name);
    } catch {} // gone meanwhile
  }
  return undefined;
}

async function runLayout(layout: Layout, processes: ProcessLayout, copy: BuiltCopy): Promise<LayoutRun> {
  const startedAt = new Date().toISOString();
  const loadBefore = loadavg();
  const layoutBegan = performance.now();
  const name = runName({ layout, processes });
  log(`${name}: starting ${layout === "postgres" ? "PostgreSQL, " : ""}nats-server, redis-server, ${serviceNames.length} services ${processes === "combined" ? "in one process" : "each in its own process"} and the gateway, from the bundles of the ${copy.source}…`);
  let postgres: CountingPostgres | undefined;
  const mesh = await startProcessMesh({
    bundles: { root: copy.dir, nodeArgs },
    database: layout,
    layout: processes,
    startPostgres: async () => (postgres = await startCountingPostgres()),
    envFor: {
      identity: { ADMIN_EMAIL: benchAdmin.email, ADMIN_PASSWORD: benchAdmin.password },
      // One generator on one address would meet the per-client limit at once; the limiter's work
      // per request (its Redis round trip) stays.
      gateway: { RATE_LIMIT_POINTS: "1000000000", RATE_LIMIT_BURST: "1000000000" },
    },
  });
  const loadgen = LoadGenerator.start();
  const raw = await startRawServer();
  let bareParts: BareParts | undefined;
  const certsDir = await mesh.pki.dir([natsOperator]);
  try {
    const nats = findPid((cmd) => cmd.includes("nats-server") && cmd.includes(mesh.nats.dir));
    const redis = findPid((cmd) => cmd.includes("redis-server") && cmd.includes(`:${mesh.redis.port}`));
    // In the combined layout the services' CPU is one process's: "services".
    const serviceRows = processes === "combined" ? ["services"] : serviceNames;
    const meshNames = ["gateway", ...serviceRows, ...(postgres ? ["postgres"] : []), "nats-server", "redis-server"];
    const measurer = new Measurer(
      loadgen,
      () => ({
        gateway: { pid: mesh.processes.gateway.pid() },
        ...(processes === "combined" ? { services: { pid: mesh.processes.identity.pid() } } : Object.fromEntries(serviceNames.map((n) => [n, { pid: mesh.processes[n].pid() }]))),
        ...(postgres ? { postgres: { pid: postgres.pid, tree: true } } : {}),
        "nats-server": { pid: nats },
        "redis-server": { pid: redis },
        "load generator": { pid: loadgen.pid },
        "raw server": { pid: raw.pid },
        "bare edge": { pid: bareParts?.pids.edge },
        "bare order": { pid: bareParts?.pids.order },
        harness: { pid: process.pid },
      }),
      meshNames,
    );
    log(`mesh up; setting up the shop (${shopperCount} shoppers, 2 confirmed orders each, stock for every product)…`);
    const fixture = await prepareShop(mesh.gatewayUrl, shopperCount, 2);
    if (layout === "postgres" && wanted.has("orders")) bareParts = await startBareParts(mesh.databaseUrl("order"), fixture.shoppers, nodeArgs ?? processNodeFlags);
    await measurer.settle(QUIET_CORES[layout]);
    const idle = Object.entries(measurer.memory());
    const [idleMiB, idlePssMiB] = [Object.fromEntries(idle.map(([name, m]) => [name, m.rssMiB])), Object.fromEntries(idle.map(([name, m]) => [name, m.pssMiB]))];
    const idleMeshCores = await measurer.meshCores(2_000);
    log(`idle: the mesh uses ${idleMeshCores.toFixed(2)} cores; ${fixture.productIds.length} products`);
    const ctx: BenchContext = {
      gatewayUrl: mesh.gatewayUrl,
      nats: { url: mesh.nats.url, certsDir },
      fixture,
      raw,
      bareParts,
      measurer,
      sql: postgres,
      options,
      quietCores: QUIET_CORES[layout],
      log,
    };
    const rows: RowResult[] = [];
    const capacities: Capacity[] = [];
    if (wanted.has("products")) rows.push(await productRow(ctx));
    if (wanted.has("orders")) rows.push(await orderReadRow(ctx));
    for (const [name, run] of [["saga", sagaRows], ["mixed", mixedRows]] as const) {
      if (!wanted.has(name)) continue;
      const { rows: steps, capacity } = await run(ctx);
      rows.push(...steps);
      capacities.push(capacity);
      log(`${name} capacity (${capacity.criterion}): ${capacity.rate ?? "none of the rates tried"}`);
    }
    return {
      layout,
      processes,
      source: copy.source,
      startedAt,
      minutes: (performance.now() - layoutBegan) / 60_000,
      machine: { cores: availableParallelism(), node: process.version, loadBefore, loadAfter: loadavg() },
      options,
      meshNames,
      rows,
      capacities,
      memory: { idleMiB, peakUnderLoadMiB: measurer.peakRssMiB, idlePssMiB, peakUnderLoadPssMiB: measurer.peakPssMiB },
      idleMeshCores,
    };
  } finally {
    await Promise.all([loadgen.stop(), raw.stop(), bareParts?.stop()]);
    await mesh.stop();
    rmSync(certsDir, { recursive: true, force: true });
  }
}

log(`${availableParallelism()} cores, load average ${loadavg().map((l) => l.toFixed(2)).join(" ")}; databases: ${layouts.map(layoutName).join(", ")}; layouts: ${processLayouts.join(", ")}; rows: ${[...wanted].join(", ")}; building a copy of the ${process.env.BENCH_REF ? `commit ${process.env.BENCH_REF}` : "work tree"}…`);
const copy = builtCopy();
process.on("exit", () => rmSync(copy.dir, { recursive: true, force: true })); // also after a Ctrl-C (the mesh is stopped first)
const runs: LayoutRun[] = [];
try {
  for (const layout of layouts) {
    for (const processes of processLayouts) {
      const run = await runLayout(layout, processes, copy);
      runs.push(run);
      log(`${runName(run)} done; figures in ${writeJson(run)}`);
    }
  }
} finally {
  await copy.remove();
}
for (const run of runs) console.log(`\n${markdown(run)}`);
if (runs.length > 1) console.log(`\n### Both layouts\n\n${comparison(runs)}`);
process.exit(0);
