// `npm start` as a new user runs it: in a fresh copy of the repository as a clone has it (no .data/,
// certs/ or dist/), on ports of its own (SHOPMESH_PORT_OFFSET), in its own process group as a
// terminal's job, interrupted as Ctrl-C does. And what a run may leave behind: processes whose
// working folder or command line is the copy, ports still listening.
// Used by the first-start test and the start-up benchmark (bench/start.ts).
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, copyFileSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { projectRoot } from "../../mesh/service.js";
import { serviceNames } from "../../mesh/topology.js";
import { allLauncherPorts, launcherPorts as portPlan, MAX_PORT_OFFSET } from "../../launcher/ports.js";
import { parentPid } from "../../launcher/proc-stat.js";
import { ChildProgress, type WaitOptions } from "./child-progress.js";
import { portFree } from "./ports.js";

/**
 * A temporary copy of the files a clone has (tracked ones, and untracked ones not ignored, so that
 * uncommitted work is tried too), with node_modules a link to the repository's (CI's own start
 * is `npm ci`; here it would take minutes).
 */
export function freshCopy(repo = projectRoot, prefix = "shopmesh-fresh-"): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  // A clone's folder is readable by all (umask 022); mkdtemp's is not, and as root PostgreSQL runs
  // as the postgres user, which must reach .data/postgres.
  chmodSync(dir, 0o755);
  const files = execFileSync("git", ["ls-files", "-z", "-co", "--exclude-standard"], { cwd: repo, maxBuffer: 64 << 20 }).toString().split("\0").filter(Boolean);
  for (const file of files) {
    const from = join(repo, file);
    if (!existsSync(from)) continue; // deleted in the work tree, not committed yet
    const to = join(dir, file);
    mkdirSync(dirname(to), { recursive: true });
    if (lstatSync(from).isSymbolicLink()) symlinkSync(readlinkSync(from), to);
    else copyFileSync(from, to);
  }
  symlinkSync(join(repo, "node_modules"), join(dir, "node_modules"));
  return dir;
}

function ephemeralRange(): [number, number] {
  try {
    const [lo, hi] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
    return [lo!, hi!];
  } catch {
    return [32_768, 60_999];
  }
}

/**
 * A random SHOPMESH_PORT_OFFSET whose every port is free. Preferably one that keeps them all out of
 * the kernel's ephemeral range, where other tests' servers on port 0 and outgoing connections get
 * their ports: with Linux's default range, offsets from ~11 000 on.
 */
export async function freePortOffset(): Promise<number> {
  const [lo, hi] = ephemeralRange();
  const all = Array.from({ length: MAX_PORT_OFFSET }, (_, i) => i + 1);
  const outside = all.filter((o) => allLauncherPorts(o).every((p) => p < lo || p > hi));
  const candidates = outside.length ? outside : all;
  for (let attempt = 0; attempt < 200; attempt++) {
    const offset = candidates[Math.floor(Math.random() * candidates.length)]!;
    let free = true;
    for (const port of allLauncherPorts(offset)) if (!(free = await portFree(port))) break;
    if (free) return offset;
  }
  throw new Error("no SHOPMESH_PORT_OFFSET with every port free in 200 tries");
}

/** Ports from `ports` that something listens on (from /proc/net/tcp and tcp6). */
export function listening(ports: readonly number[]): number[] {
  const wanted = new Set(ports);
  const found = new Set<number>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const row of text.split("\n").slice(1)) {
      const [, local, , state] = row.trim().split(/\s+/);
      if (state !== "0A" || !local) continue; // 0A: LISTEN
      const port = parseInt(local.split(":")[1]!, 16);
      if (wanted.has(port)) found.add(port);
    }
  }
  return [...found].sort((a, b) => a - b);
}

export interface ProcessInfo {
  pid: number;
  cwd: string;
  cmdline: string;
}

/** Live processes whose working folder is in `dir` or whose command line names it (PostgreSQL as root runs as postgres: its data folder is in its command line). */
export function processesUsing(dir: string): ProcessInfo[] {
  const found: ProcessInfo[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name) || Number(name) === process.pid) continue;
    try {
      const cwd = readlinkSync(`/proc/${name}/cwd`).replace(/ \(deleted\)$/, "");
      const cmdline = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").join(" ").trim();
      if (cwd === dir || cwd.startsWith(dir + "/") || cmdline.includes(dir)) found.push({ pid: Number(name), cwd, cmdline });
    } catch {} // gone meanwhile, or a kernel thread
  }
  return found;
}

/**
 * The pid of the process running a service (or "gateway") for the launcher in `dir`, as an
 * operator would find it: the service's own, or the host of several that names it.
 */
export function meshPid(dir: string, name: string): number | undefined {
  const runs = (cmdline: string) =>
    name === "gateway" ? cmdline.includes("dist/gateway/main.js") : cmdline.includes(`dist/services/${name}/main.js`) || (cmdline.includes("dist/launcher/host.js") && cmdline.split(" ").includes(name));
  return processesUsing(dir).find((p) => p.cwd === dir && runs(p.cmdline))?.pid;
}

/** The environment of a new user's terminal: nothing from this test run or from a ShopMesh of ours. */
export function terminalEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const ours = /^(VITEST|NODE_ENV$|TEST$|npm_lifecycle_|npm_package_|SHOPMESH_|START_STALL_SECONDS$|LOG_LEVEL$|CERTS_DIR$|DATA_DIR$|PORT$|METRICS_PORT$|NATS_URL$|REDIS_URL$|DATABASE_URL$|[A-Z]+_DATABASE_URL$|[A-Z]+_ADDRESSES$)/;
  for (const [key, value] of Object.entries(process.env)) if (!ours.test(key)) env[key] = value;
  return { ...env, ...extra };
}

/** The process that runs the mesh: the parent of its services. */
export function launcherPid(dir: string): number | undefined {
  const service = meshPid(dir, "gateway") ?? serviceNames.map((n) => meshPid(dir, n)).find(Boolean);
  return service && parentPid(service);
}

export interface Launcher {
  dir: string;
  offset: number;
  gatewayUrl: string;
  /** npm's output, and waits on it while npm and everything under it make progress. */
  progress: ChildProgress;
  /**
   * Ctrl-C for the launcher: SIGINT to the process that runs the mesh. A terminal sends it to the
   * whole foreground group (npm, sh, the launcher), and then npm's status is 130 whatever the
   * launcher did: sh dies of the SIGINT it got itself once its child has exited. Sent to the
   * launcher alone, npm's status is the launcher's.
   */
  interrupt(): void;
  /** SIGKILL to npm's process group (cleanup; the launcher's children each have their own). */
  kill(): void;
  /** Resolves once the gateway's /readyz answers 200. */
  ready(opts?: WaitOptions): Promise<void>;
}

export function startLauncher(dir: string, offset: number, env: Record<string, string> = {}): Launcher {
  // Its own process group, as a terminal's foreground job has.
  const child = spawn("npm", ["start"], {
    cwd: dir,
    env: terminalEnv({ SHOPMESH_PORT_OFFSET: String(offset), ...env }),
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  const progress = new ChildProgress(child);
  const gatewayUrl = `http://127.0.0.1:${portPlan(offset).gateway}`;
  return {
    dir,
    offset,
    gatewayUrl,
    progress,
    interrupt() {
      const pid = launcherPid(dir);
      if (!pid) throw new Error(`no launcher found under ${dir}`);
      process.kill(pid, "SIGINT");
    },
    kill() {
      try {
        process.kill(-child.pid!, "SIGKILL");
      } catch {} // gone already
    },
    ready: (opts) =>
      progress.until("the gateway's /readyz to answer 200", () => fetch(`${gatewayUrl}/readyz`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.status === 200, () => false), opts),
  };
}

/** The last lines of each log under `dir`/.data/logs, for a failure's report. */
export function logTails(dir: string, lines = 20): string {
  const logs = join(dir, ".data", "logs");
  if (!existsSync(logs)) return "(no .data/logs)";
  return readdirSync(logs)
    .sort()
    .map((file) => `--- .data/logs/${file} (last ${lines} lines)\n${readFileSync(join(logs, file), "utf8").trimEnd().split("\n").slice(-lines).join("\n")}`)
    .join("\n");
}

/** Kills whatever still uses the copy, then removes it. */
export async function removeCopy(dir: string): Promise<void> {
  for (let round = 0; round < 50; round++) {
    const left = processesUsing(dir);
    if (!left.length) break;
    for (const p of left) {
      try {
        process.kill(p.pid, "SIGKILL");
      } catch {}
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  rmSync(dir, { recursive: true, force: true });
}
