// Every process of a run as Linux's /proc sees it: CPU time used over a measured window and
// resident memory, per named process (or per process tree: PostgreSQL is a postmaster and a
// backend per connection). Read from outside, so measuring costs the processes nothing.
// Memory is given twice: RSS counts every page a process maps, so each Node process counts the
// ~50 MiB of node's own code that all of them share; PSS (proportional set size) counts a shared
// page in shares, so the figures of processes add up to what they use together.
import { execFileSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";

const TICKS_PER_SECOND = Number(execFileSync("getconf", ["CLK_TCK"]).toString()) || 100;
const PAGE_KIB = (Number(execFileSync("getconf", ["PAGESIZE"]).toString()) || 4096) / 1024;

interface Stat {
  ppid: number;
  /** Its own CPU ticks (user + system). */
  own: number;
  /** Plus those of its reaped children: a PostgreSQL backend that exits still counts. */
  withReaped: number;
  rssKiB: number;
}

/** One pass over /proc. */
function scan(): Map<number, Stat> {
  const stats = new Map<number, Stat>();
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const raw = readFileSync(`/proc/${name}/stat`, "utf8");
      const f = raw.slice(raw.lastIndexOf(")") + 2).split(" ");
      const own = Number(f[11]) + Number(f[12]);
      stats.set(Number(name), { ppid: Number(f[1]), own, withReaped: own + Number(f[13]) + Number(f[14]), rssKiB: Number(f[21]) * PAGE_KIB });
    } catch {} // gone meanwhile
  }
  return stats;
}

/** A process to watch: `tree` counts everything under it too. */
export interface Watched {
  pid: number | undefined;
  tree?: boolean;
}

export interface Usage {
  cpuSeconds: number;
}

/** Each watched name's pids (its whole tree when `tree`) among those alive in `stats`. */
function pidsOf(watched: Record<string, Watched>, stats: Map<number, Stat>): Map<string, number[]> {
  const children = new Map<number, number[]>();
  for (const [pid, { ppid }] of stats) {
    const siblings = children.get(ppid);
    if (siblings) siblings.push(pid);
    else children.set(ppid, [pid]);
  }
  const out = new Map<string, number[]>();
  for (const [name, { pid, tree }] of Object.entries(watched)) {
    if (pid === undefined || !stats.has(pid)) continue;
    const pids: number[] = [];
    for (const queue = [pid]; queue.length; ) {
      const p = queue.pop()!;
      pids.push(p);
      if (tree) queue.push(...(children.get(p) ?? []).filter((c) => stats.has(c)));
    }
    out.set(name, pids);
  }
  return out;
}

/** A process's proportional set size in KiB: 0 once it is gone, NaN if it cannot be read (printed as –). */
function pssKiB(pid: number): number {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1] ?? NaN);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "ENOENT" || (err as NodeJS.ErrnoException).code === "ESRCH" ? 0 : NaN;
  }
}

/**
 * Resident memory now per name, as RSS and as PSS (MiB). PSS walks every page table of the process
 * (a PostgreSQL tree's too), which costs the reader real CPU on a busy machine: it is read only for
 * the names `withPss` accepts, given their RSS; the others get NaN.
 */
export function memory(watched: Record<string, Watched>, withPss: (name: string, rssMiB: number) => boolean = () => true): Record<string, { rssMiB: number; pssMiB: number }> {
  const stats = scan();
  const out: Record<string, { rssMiB: number; pssMiB: number }> = {};
  for (const [name, pids] of pidsOf(watched, stats)) {
    const sum = (f: (pid: number) => number) => pids.reduce((n, p) => n + f(p), 0) / 1024;
    const rssMiB = sum((p) => stats.get(p)!.rssKiB);
    out[name] = { rssMiB, pssMiB: withPss(name, rssMiB) ? sum(pssKiB) : NaN };
  }
  return out;
}

/** CPU seconds used so far, per name; a name whose process is gone is left out. */
export function usage(watched: Record<string, Watched>): Record<string, Usage> {
  const stats = scan();
  const out: Record<string, Usage> = {};
  for (const [name, pids] of pidsOf(watched, stats)) {
    // A single process's own ticks only: the harness's reaped children are no work of its own.
    const ticks = pids.reduce((n, p) => n + (watched[name]!.tree ? stats.get(p)!.withReaped : stats.get(p)!.own), 0);
    out[name] = { cpuSeconds: ticks / TICKS_PER_SECOND };
  }
  return out;
}

/** CPU seconds the whole machine has been busy (every process, the kernel, time stolen by the host). */
export function machineCpuSeconds(): number {
  const [, ...fields] = readFileSync("/proc/stat", "utf8").split("\n", 1)[0]!.trim().split(/\s+/);
  const [user, nice, system, , , irq, softirq, steal] = fields.map(Number);
  return (user! + nice! + system! + irq! + softirq! + (steal ?? 0)) / TICKS_PER_SECOND;
}

/** CPU seconds each name used between two readings. */
export function cpuBetween(before: Record<string, Usage>, after: Record<string, Usage>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, { cpuSeconds }] of Object.entries(after)) if (before[name]) out[name] = cpuSeconds - before[name].cpuSeconds;
  return out;
}
