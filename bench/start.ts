// How long `npm start` takes a new user, and what the running mesh holds in memory, on this machine:
//   cold   a fresh copy of the repository (no .data/, certs/, dist/) → the gateway's /readyz 200;
//   warm   the same copy started again (certificates, databases and their demo data kept);
//   idle   resident memory (VmRSS) ~15 s after a warm start's ready: every service and the gateway,
//          PostgreSQL (all its processes), nats-server, redis-server, the launcher, npm and sh;
// each with the private PostgreSQL and with SHOPMESH_DATABASE=pglite (the fallback where PostgreSQL
// is not installed). Every start is stopped with SIGINT and must exit 0 leaving nothing behind.
// Baseline, same run: a bare `node -e "setInterval(()=>{},1000)"` (time to its first line, its RSS).
// In the launcher's default layout (the services in one process), or BENCH_LAYOUT=processes.
//   npm run bench:start      (BENCH_START_RUNS=3, BENCH_IDLE_SECONDS=15)
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { serviceNames } from "../mesh/topology.js";
import { ChildProgress } from "../test/support/child-progress.js";
import { findPostgresBin } from "../test/support/postgres.js";
import { allLauncherPorts } from "../launcher/ports.js";
import { freePortOffset, freshCopy, launcherPid, listening, logTails, meshPid, processesUsing, removeCopy, startLauncher, type Launcher } from "../test/support/fresh-start.js";

const runs = Number(process.env.BENCH_START_RUNS ?? 3);
const idleMs = Number(process.env.BENCH_IDLE_SECONDS ?? 15) * 1000;
const processNames = [...serviceNames, "gateway"] as const;
const modes = findPostgresBin() ? (["postgres", "pglite"] as const) : (["pglite"] as const);
type Mode = (typeof modes)[number];
const modeName = (m: Mode) => (m === "postgres" ? "PostgreSQL" : "PGlite");

/** name → one figure per run. */
const figures = new Map<string, number[]>();
const record = (name: string, value: number) => figures.set(name, [...(figures.get(name) ?? []), value]);
const problems: string[] = [];
const log = (line: string) => console.log(`[${new Date().toTimeString().slice(0, 8)}] ${line}`);

function statusKiB(pid: number, field: string, file = "status"): number {
  try {
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(readFileSync(`/proc/${pid}/${file}`, "utf8"));
    return match ? Number(match[1]) : 0;
  } catch {
    return 0; // gone meanwhile
  }
}
const rss = (pid: number | undefined) => (pid ? statusKiB(pid, "VmRSS") : 0);
const MiB = (kib: number) => kib / 1024;

async function baseline(run: number) {
  const began = performance.now();
  const child = spawn(process.execPath, ["-e", "setInterval(() => {}, 1000); console.log('up')"], { stdio: ["ignore", "pipe", "pipe"] });
  const progress = new ChildProgress(child);
  await progress.waitForLine(/^up$/);
  record("baseline: bare node, to its first line (s)", (performance.now() - began) / 1000);
  await new Promise((r) => setTimeout(r, idleMs));
  record("baseline: bare node, idle RSS (MiB)", MiB(rss(child.pid)));
  child.kill("SIGKILL");
  await progress.exited;
  log(`run ${run}: baseline done`);
}

/** Starts `npm start` in `dir`, records how long it took to /readyz 200 and its phases. */
async function start(dir: string, offset: number, label: string, env: Record<string, string>): Promise<Launcher> {
  const began = performance.now();
  const launcher = startLauncher(dir, offset, env);
  try {
    await launcher.ready();
    const readyS = (performance.now() - began) / 1000;
    const { lines, lineTimes } = launcher.progress;
    const at = (re: RegExp) => {
      const i = lines.findIndex((l) => re.test(l));
      return i < 0 ? NaN : (lineTimes[i]! - began) / 1000;
    };
    record(`${label}: /readyz 200 (s)`, readyS);
    record(`${label}:   to the launcher's first line: npm, build (s)`, at(/^Starting ShopMesh/));
    record(`${label}:   to the first process spawned: + certs, servers (s)`, at(/^  \S+ +starting /));
    log(`${label}: ready in ${readyS.toFixed(1)} s`);
    return launcher;
  } catch (err) {
    console.error(`${label} failed: ${(err as Error).message}\n${logTails(dir)}`);
    launcher.kill();
    throw err;
  }
}

/** SIGINT, and the checks a person relies on: exit 0, no process and no port left. */
async function stop(launcher: Launcher, label: string) {
  const began = performance.now();
  launcher.interrupt();
  const exit = await launcher.progress.waitForExit();
  record(`${label}: Ctrl-C to exit (s)`, (performance.now() - began) / 1000);
  if (exit.code !== 0) problems.push(`${label}: exit ${JSON.stringify(exit)} after SIGINT; last output:\n${launcher.progress.lines.slice(-15).join("\n")}`);
  const left = processesUsing(launcher.dir);
  if (left.length) problems.push(`${label}: left running after SIGINT: ${left.map((p) => `${p.pid} ${p.cmdline}`).join("; ")}`);
  const ports = listening(allLauncherPorts(launcher.offset));
  if (ports.length) problems.push(`${label}: still listening after SIGINT: ${ports.join(", ")}`);
}

function idleMemory(launcher: Launcher, mode: Mode) {
  const label = `idle RSS, ${modeName(mode)} (MiB)`;
  const all = processesUsing(launcher.dir);
  let mesh = 0;
  // Services sharing a host process are one process here, counted once.
  const byPid = new Map<number | undefined, string[]>();
  for (const name of processNames) {
    const pid = meshPid(launcher.dir, name);
    if (!pid) problems.push(`${label}: no ${name} process`);
    byPid.set(pid, [...(byPid.get(pid) ?? []), name]);
  }
  for (const [pid, names] of byPid) {
    const kib = rss(pid);
    record(`${label}: ${names.length > 1 ? `${names.length} services in one process` : names[0]}`, MiB(kib));
    mesh += kib;
  }
  record(`${label}: services + gateway`, MiB(mesh));
  const sum = (ps: typeof all, measure: (pid: number) => number = rss) => ps.reduce((n, p) => n + measure(p.pid), 0);
  const postgres = all.filter((p) => /^(\/usr\/lib\/postgresql\/\S+\/postgres |postgres: )/.test(p.cmdline));
  if (mode === "postgres") {
    record(`${label}: postgres, all processes (RSS sum)`, MiB(sum(postgres)));
    // Each PostgreSQL process counts the shared buffers it touched: PSS shares them out.
    record(`${label}: postgres, all processes (PSS sum)`, MiB(sum(postgres, (pid) => statusKiB(pid, "Pss", "smaps_rollup"))));
    record(`idle, ${modeName(mode)}: postgres processes (count)`, postgres.length);
  }
  record(`${label}: nats-server`, MiB(sum(all.filter((p) => /nats-server/.test(p.cmdline)))));
  record(`${label}: redis-server`, MiB(sum(all.filter((p) => /redis-server/.test(p.cmdline)))));
  const launcherItself = launcherPid(launcher.dir);
  record(`${label}: launcher`, MiB(rss(launcherItself)));
  record(`${label}: npm + sh`, MiB(sum(all.filter((p) => p.pid !== launcherItself && /^(npm|sh -c)/.test(p.cmdline)))));
  record(`${label}: everything (RSS sum)`, MiB(sum(all)));
}

async function benchMode(run: number, mode: Mode) {
  const dir = freshCopy(undefined, "shopmesh-bench-start-");
  const env: Record<string, string> = { ...(mode === "pglite" ? { SHOPMESH_DATABASE: "pglite" } : {}), ...(process.env.BENCH_LAYOUT ? { SHOPMESH_LAYOUT: process.env.BENCH_LAYOUT } : {}) };
  try {
    const offset = await freePortOffset();
    const cold = await start(dir, offset, `cold, ${modeName(mode)}`, env);
    await stop(cold, `cold, ${modeName(mode)}`);
    const warm = await start(dir, await freePortOffset(), `warm, ${modeName(mode)}`, env);
    await new Promise((r) => setTimeout(r, idleMs));
    idleMemory(warm, mode);
    await stop(warm, `warm, ${modeName(mode)}`);
  } finally {
    await removeCopy(dir);
  }
  log(`run ${run}: ${modeName(mode)} done`);
}

const began = performance.now();
const load = () => loadavg().map((l) => l.toFixed(1)).join(" ");
log(`${availableParallelism()} cores, load average ${load()}; ${runs} run(s) of: a bare node; ${modes.map((m) => `${modeName(m)} cold and warm`).join(", ")}; idle memory ${idleMs / 1000} s after ready`);
for (let run = 1; run <= runs; run++) {
  await baseline(run);
  for (const mode of modes) await benchMode(run, mode);
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const width = Math.max(...[...figures.keys()].map((k) => k.length));
const cell = (n: number) => (Number.isNaN(n) ? "-" : n >= 100 || Number.isInteger(n) ? n.toFixed(0) : n.toFixed(1)).padStart(8);
console.log(`\nnpm start on this machine (${runs} run(s), ${(performance.now() - began) / 60_000 < 1 ? "" : `${((performance.now() - began) / 60_000).toFixed(1)} min in all; `}node ${process.version}):`);
console.log(`${"".padEnd(width)}   median     min     max`);
for (const [name, values] of figures) console.log(`${name.padEnd(width)} ${cell(median(values))}${cell(Math.min(...values))}${cell(Math.max(...values))}`);
console.log(`load average at the end: ${load()} (${availableParallelism()} cores)`);
if (problems.length) {
  console.log(`\n${problems.length} problem(s):\n${problems.join("\n")}`);
  process.exitCode = 1;
}
