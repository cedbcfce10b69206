// Every process of a run as Linux's /proc sees it: CPU time used over a measured window and
// resident memory, per named process (or per process tree: PostgreSQL is a postmaster and a
// backend per connection). Read from outside, so measuring costs the processes nothing.
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
  rssMiB: number;
}

/** CPU seconds used so far and resident memory now, per name; a name whose process is gone is left out. */
export function usage(watched: Record<string, Watched>): Record<string, Usage> {
  const stats = scan();
  const children = new Map<number, number[]>();
  for (const [pid, { ppid }] of stats) {
    const siblings = children.get(ppid);
    if (siblings) siblings.push(pid);
    else children.set(ppid, [pid]);
  }
  const out: Record<string, Usage> = {};
  for (const [name, { pid, tree }] of Object.entries(watched)) {
    if (pid === undefined || !stats.has(pid)) continue;
    let ticks = 0;
    let rssKiB = 0;
    for (const queue = [pid]; queue.length; ) {
      const p = queue.pop()!;
      const s = stats.get(p)!;
      // A single process's own ticks only: the harness's reaped children are no work of its own.
      ticks += tree ? s.withReaped : s.own;
      rssKiB += s.rssKiB;
      if (tree) queue.push(...(children.get(p) ?? []).filter((c) => stats.has(c)));
    }
    out[name] = { cpuSeconds: ticks / TICKS_PER_SECOND, rssMiB: rssKiB / 1024 };
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
