// What Linux's /proc says of a process: the CPU time it has used (how the launcher and the tests
// tell a busy process, making progress however slowly, from a stuck one) and its parent.
// Undefined where there is no /proc.
import { readdirSync, readFileSync } from "node:fs";

/** The fields of /proc/<pid>/stat after the command name (which is in parentheses and may hold spaces). */
function statFields(pid: number | string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  } catch {
    return undefined; // gone, or no /proc
  }
}

/** The pid of `pid`'s parent. */
export function parentPid(pid: number): number | undefined {
  const f = statFields(pid);
  return f && Number(f[1]);
}

/** CPU time (clock ticks) `pid` itself has used. */
export function cpuTicks(pid: number): number | undefined {
  const f = statFields(pid);
  return f && Number(f[11]) + Number(f[12]); // utime + stime
}

/** CPU time (clock ticks, own and reaped children's) of `root` and every process under it. */
export function treeCpuTicks(root: number): number | undefined {
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((name) => /^\d+$/.test(name));
  } catch {
    return undefined;
  }
  const stats = new Map<number, { ppid: number; ticks: number }>();
  for (const pid of pids) {
    const f = statFields(pid);
    if (f) stats.set(Number(pid), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) });
  }
  if (!stats.has(root)) return undefined;
  const children = new Map<number, number[]>();
  for (const [pid, { ppid }] of stats) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  let total = 0;
  for (const queue = [root]; queue.length; ) {
    const pid = queue.pop()!;
    total += stats.get(pid)!.ticks;
    queue.push(...(children.get(pid) ?? []));
  }
  return total;
}
