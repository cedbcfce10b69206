// The results of a run as markdown tables (what the README quotes) and as JSON (every figure).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { projectRoot } from "../mesh/project-root.js";
import { meshCpuMs, type Baseline, type BenchOptions, type Capacity, type RowResult } from "./rows.js";
import { describeFailures } from "./stats.js";
import type { MixedOp, OpenResult } from "./jobs.js";
import type { Layout as LauncherLayout } from "../launcher/layout.js";

export type Layout = "postgres" | "pglite";
export const layoutName = (l: Layout) => (l === "postgres" ? "PostgreSQL" : "PGlite");
/** How the services are laid out in processes: the launcher's layouts. */
export type ProcessLayout = LauncherLayout;
export const processLayoutName = (p: ProcessLayout) => (p === "combined" ? "services in one process" : "a process per service");
export const runName = (run: { layout: Layout; processes: ProcessLayout }) => `${layoutName(run.layout)}, ${processLayoutName(run.processes)}`;

export interface LayoutRun {
  layout: Layout;
  processes: ProcessLayout;
  /** What was measured: "work tree" or a commit. */
  source: string;
  startedAt: string;
  minutes: number;
  machine: { cores: number; node: string; loadBefore: number[]; loadAfter: number[] };
  options: BenchOptions;
  /** The processes whose CPU counts as the mesh's. */
  meshNames: string[];
  rows: RowResult[];
  capacities: Capacity[];
  /** RSS, and PSS (shared pages counted in shares: see bench/proc.ts), in MiB. */
  memory: { idleMiB: Record<string, number>; peakUnderLoadMiB: Record<string, number>; idlePssMiB: Record<string, number>; peakUnderLoadPssMiB: Record<string, number> };
  /** CPU the idle mesh used (cores): part of every figure per unit, the more so at low rates. */
  idleMeshCores: number;
}

const n0 = (x: number) => (Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : "–");
const n1 = (x: number) => (Number.isFinite(x) ? x.toFixed(x >= 100 ? 0 : 1) : "–");
const ms = (x: number) => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : "–");

function rowLabel(r: RowResult, capacities: Capacity[]): string {
  const atCapacity = capacities.some((c) => c.row === r.row && c.rate !== undefined && c.rate === r.rate);
  return `${r.title}${r.search ? " (search)" : ""}${atCapacity ? " **(capacity)**" : ""}`;
}

function ratio(r: RowResult): string {
  const b = r.baseline;
  if (!b) return "—";
  if (r.row === "saga") return `p50 ${n1(r.latency.p50 / b.latency.p50)}×, p99 ${n1(r.latency.p99 / b.latency.p99)}×`;
  const bare = r.bareParts ? `; of the bare parts ${(r.achieved / r.bareParts.achieved).toFixed(2)}×` : "";
  return `${(r.achieved / b.achieved).toFixed(2)}×; p99 ${n1(r.latency.p99 / b.latency.p99)}×${bare}`;
}

const describeBaseline = (b: Baseline) => `${b.title}: ${n0(b.achieved)}/s, p50 ${ms(b.latency.p50)} / p99 ${ms(b.latency.p99)} ms${b.failed ? `, ${b.failed} failed` : ""}`;
const baselineCell = (r: RowResult) => (r.baseline ? [r.baseline, ...(r.bareParts ? [r.bareParts] : [])].map(describeBaseline).join("; ") : "—");

const table = (header: string[], rows: string[][]) =>
  [`| ${header.join(" | ")} |`, `|${header.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");

export function markdown(run: LayoutRun): string {
  const out: string[] = [];
  const { machine, options } = run;
  out.push(
    `### ${runName(run)} — ${run.source}, ${run.startedAt}`,
    "",
    `${machine.cores} cores, node ${machine.node}, load average before ${machine.loadBefore.map((l) => l.toFixed(2)).join(" ")}, after ${machine.loadAfter.map((l) => l.toFixed(2)).join(" ")}; ` +
      `${options.seconds} s per step after ${options.warmupSeconds} s of warm-up (closed loop and mixed); the idle mesh used ${run.idleMeshCores.toFixed(2)} cores; ${run.minutes.toFixed(1)} min in all.`,
    "",
  );
  out.push(
    table(
      ["row", "offered", "achieved", "p50 / p99 ms", "baseline, same run", "ratio", "mesh CPU per unit", "failed", "other work (cores)"],
      run.rows.map((r) => [
        rowLabel(r, run.capacities),
        r.load,
        `${n1(r.achieved)} ${r.unit}`,
        `${ms(r.latency.p50)} / ${ms(r.latency.p99)}`,
        baselineCell(r),
        ratio(r),
        `${meshCpuMs(run.meshNames, r.cpuUs).toFixed(2)} ms`,
        r.failed ? String(r.failed) : "0",
        r.otherCores.toFixed(2),
      ]),
    ),
  );
  if (run.capacities.length) {
    out.push("", ...run.capacities.map((c) => `- capacity, ${c.row}: **${c.rate === undefined ? "none of the rates tried" : `${c.rate}/s`}** (the highest rate tried with ${c.criterion})`));
  }
  const failing = run.rows.filter((r) => r.failed);
  if (failing.length) out.push("", "Failures (most frequent reasons first):", ...failing.map((r) => `- ${r.row} ${r.load}: ${describeFailures(r.failures)}`));

  const sql = run.rows.filter((r) => r.sql);
  if (sql.length) {
    out.push("", "SQL per created order (pg_stat_statements over the step, every service's database; BEGIN and COMMIT count as statements):", "");
    const dbs = [...new Set(sql.flatMap((r) => Object.keys(r.sql!.statementsByDatabase)))].sort();
    out.push(
      table(
        ["saga step", "statements", "transactions (COMMIT)", ...dbs.map((d) => d.replace(/^shop_/, ""))],
        sql.map((r) => [r.load, n1(r.sql!.statementsPerOrder), n1(r.sql!.commitsPerOrder), ...dbs.map((d) => n1((r.sql!.statementsByDatabase[d] ?? 0) / ((r.detail as { created: number }).created || NaN)))]),
      ),
    );
  }

  // CPU per unit, per process: the mesh's processes, then the others on the same cores.
  const names = [...new Set([...run.meshNames, ...run.rows.flatMap((r) => [...Object.keys(r.cpuUs), ...Object.keys(r.baseline?.cpuUs ?? {}), ...Object.keys(r.bareParts?.cpuUs ?? {})])])];
  out.push("", "CPU µs per unit (request, order or operation) and process, over each measured window (the idle mesh's share included):", "");
  const cpuRows: string[][] = [];
  for (const r of run.rows) {
    cpuRows.push([`${r.row} ${r.load}`, ...names.map((n) => n0(r.cpuUs[n] ?? NaN)), n0(meshCpuMs(run.meshNames, r.cpuUs) * 1000)]);
    for (const b of [r.baseline, r.bareParts]) if (b) cpuRows.push([`↳ ${b.title}`, ...names.map((n) => n0(b.cpuUs[n] ?? NaN)), "–"]);
  }
  out.push(table(["row", ...names, "mesh total"], cpuRows));

  const mixed = run.rows.filter((r) => r.row === "mixed");
  if (mixed.length) {
    const ops = [...new Set(mixed.flatMap((r) => Object.keys((r.detail as OpenResult).byOp)))];
    out.push("", "Mixed traffic, p99 ms by operation (an order is POST /v1/payment-methods then POST /v1/orders):", "");
    const detail = (r: RowResult) => r.detail as OpenResult;
    out.push(
      table(
        ["offered", "all but logins", ...ops],
        mixed.map((r) => [r.load, ms(detail(r).latencyWithoutLogins.p99), ...ops.map((op) => ms(detail(r).byOp[op as MixedOp]?.p99 ?? NaN))]),
      ),
    );
  }
  if (run.layout === "pglite") out.push("", "SQL per order: not counted in the PGlite layout.");

  out.push(
    "",
    `Resident memory, MiB. RSS counts every page a process maps (each Node process counts node's own code, ~50 MiB shared by all of them${run.layout === "postgres" ? "; PostgreSQL: the sum over its processes, shared buffers counted in each" : ""}); PSS counts a shared page in shares:`,
    "",
  );
  const m = run.memory;
  const memNames = Object.keys({ ...m.idleMiB, ...m.peakUnderLoadMiB });
  out.push(
    table(
      ["process", "idle RSS", "highest RSS under load", "idle PSS", "PSS at the highest RSS"],
      memNames.map((n) => [n, n0(m.idleMiB[n] ?? NaN), n0(m.peakUnderLoadMiB[n] ?? NaN), n0(m.idlePssMiB[n] ?? NaN), n0(m.peakUnderLoadPssMiB[n] ?? NaN)]),
    ),
  );
  return out.join("\n");
}

/** One line per row and load, a column per layout: for runs of both. */
export function comparison(runs: LayoutRun[]): string {
  const keys = [...new Set(runs.flatMap((run) => run.rows.filter((r) => !r.search).map((r) => `${r.title}\t${r.load}`)))];
  const cell = (run: LayoutRun, key: string) => {
    const r = run.rows.find((x) => !x.search && `${x.title}\t${x.load}` === key);
    return r ? `${n1(r.achieved)} ${r.unit}, p99 ${ms(r.latency.p99)} ms, ${meshCpuMs(run.meshNames, r.cpuUs).toFixed(2)} ms CPU (other work ${r.otherCores.toFixed(2)} cores)` : "–";
  };
  const capacityRows = ["saga", "mixed"].filter((row) => runs.some((run) => run.capacities.some((c) => c.row === row))).map((row) => [`capacity, ${row}`, "", ...runs.map((run) => String(run.capacities.find((c) => c.row === row)?.rate ?? "–"))]);
  return table(
    ["row", "offered", ...runs.map(runName)],
    [...keys.map((key) => [...key.split("\t"), ...runs.map((run) => cell(run, key))]), ...capacityRows],
  );
}

/** Writes the run to .data/bench/<date>-<database>-<process layout>.json (ignored by git); returns the path. */
export function writeJson(run: LayoutRun): string {
  const dir = join(projectRoot, ".data", "bench");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${run.startedAt.replace(/:/g, "-").slice(0, 16)}-${run.layout}-${run.processes}.json`);
  writeFileSync(file, JSON.stringify(run, null, 2));
  return file;
}
