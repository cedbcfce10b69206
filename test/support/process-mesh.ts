// The whole mesh as an operator runs it: one real PostgreSQL server with a database per service,
// nats-server and redis-server, every service as its own node process (as `npm start` starts
// them), and the gateway as its own process. Each process keeps its ports across restarts, so a
// killed service comes back where its callers look for it. Used by the chaos and fuzz runs, and by
// the benchmarks (bench/all.ts), which run the bundles of a built copy, on PostgreSQL or PGlite.
// layout "combined" runs the six services in one host process (launcher/host.ts) as `npm start`
// does by default; then every service's entry in `processes` is that host.
import { hostNodeFlags, processNodeFlags } from "../../launcher/node-flags.js";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { healthClient } from "../../mesh/rpc/health-client.js";
import { projectRoot } from "../../mesh/service.js";
import { serviceNames, type ServiceName } from "../../mesh/topology.js";
import { treeCpuTicks } from "../../launcher/proc-stat.js";
import { seedPgliteFolders } from "../../launcher/pglite-template.js";
import { forHosted } from "../../launcher/layout.js";
import { createTestPki, type TestPki } from "./pki.js";
import { portFree } from "./ports.js";
import { startPostgres, type TestPostgres } from "./postgres.js";
import { startNats, startRedis, type NatsTestServer, type TestServer } from "./processes.js";
import type { Layout } from "../../launcher/layout.js";

export type ProcessName = ServiceName | "gateway";

export interface MeshProcess {
  name: ProcessName;
  /** gRPC port of a service, HTTP port of the gateway. */
  port: number;
  running(): boolean;
  /** Spawns it (again) with the same environment; resolves once it is spawned, not ready. */
  start(): void;
  /** Sends `signal` and resolves when the process has exited. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Its last lines of output, for diagnostics. */
  tail(): string[];
  /** A number that grows while it makes progress: lines written plus CPU time used. */
  progress(): number;
  /** Its process id while it runs. */
  pid(): number | undefined;
}

export interface ProcessMesh {
  pki: TestPki;
  /** Its connect() is the operator's connection (NATS is locked: TLS and a certificate of the test CA). */
  nats: NatsTestServer;
  redis: TestServer;
  /** The server holding every service's database; undefined in the PGlite layout. */
  postgres: TestPostgres | undefined;
  processes: Record<ProcessName, MeshProcess>;
  gatewayUrl: string;
  /** The PostgreSQL URL of a service's own database (throws in the PGlite layout). */
  databaseUrl(name: ServiceName): string;
  /** Resolves when the service answers SERVING on grpc.health.v1 (or the gateway's /healthz is 200). */
  /** Resolves once it answers; fails when it exits or shows no progress (output, CPU time) for `stallMs`. */
  waitReady(name: ProcessName, stallMs?: number): Promise<void>;
  /** The health status of a service right now ("DOWN" when unreachable). */
  health(name: ServiceName): Promise<string>;
  stop(): Promise<void>;
}

export interface ProcessMeshOptions {
  /** Extra environment for every service (and the gateway). */
  env?: Record<string, string>;
  /** Extra environment per process. */
  envFor?: Partial<Record<ProcessName, Record<string, string>>>;
  /** Every line any process writes (stdout and stderr). */
  onLine?(name: ProcessName | "host", line: string): void;
  /** "combined": the six services in one host process; default "processes", one each. */
  layout?: Layout;
  /**
   * Runs every process from the bundles `node scripts/build.mjs` made in `<root>/dist`, in `root`,
   * with `nodeArgs` (by default the launcher's flags, launcher/node-flags.ts), as `npm start` does;
   * by default the TypeScript sources run through tsx.
   */
  bundles?: { root: string; nodeArgs?: readonly string[] };
  /**
   * "pglite": no PostgreSQL server; each service embeds PGlite in `<root>/.data/<service>` (the
   * bundles' root, else a temporary folder), seeded as the launcher seeds it. Default "postgres".
   */
  database?: "postgres" | "pglite";
  /** Starts the PostgreSQL server instead of the default one (200 connections), e.g. with other settings. */
  startPostgres?(): Promise<TestPostgres>;
}

const TAIL = 40;

/**
 * A free port below Linux's ephemeral range (32768+): a process keeps its port across restarts for
 * the whole run, and a port in the ephemeral range can meanwhile become some outgoing connection's.
 */
const allocated = new Set<number>();
async function stablePort(): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (allocated.has(port)) continue;
    allocated.add(port);
    if (await portFree(port)) return port;
  }
}

/** `entry`: its module without extension, relative to the root (e.g. "gateway/main"). */
function managedProcess(name: ProcessName, label: ProcessName | "host", entry: string, entryArgs: string[], port: number, env: Record<string, string>, opts: ProcessMeshOptions): MeshProcess {
  const { onLine, bundles } = opts;
  const [cwd, args] = bundles
    ? [bundles.root, [...(bundles.nodeArgs ?? (label === "host" ? hostNodeFlags : processNodeFlags)), join("dist", `${entry}.js`), ...entryArgs]]
    : [projectRoot, ["--import", "tsx", `${entry}.ts`, ...entryArgs]];
  let child: ChildProcess | undefined;
  const tail: string[] = [];
  let lines = 0;
  const running = () => child !== undefined && child.exitCode === null && child.signalCode === null;
  return {
    name,
    port,
    running,
    start() {
      if (running()) throw new Error(`${name} is already running`);
      child = spawn(process.execPath, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
      for (const stream of [child.stdout!, child.stderr!]) {
        createInterface({ input: stream }).on("line", (line) => {
          tail.push(line);
          lines++;
          if (tail.length > TAIL) tail.shift();
          onLine?.(label, line);
        });
      }
    },
    async kill(signal = "SIGTERM") {
      if (!child || !running()) return;
      const exited = new Promise((resolve) => child!.once("exit", resolve));
      child.kill(signal);
      await exited;
    },
    tail: () => [...tail],
    progress: () => lines + (child?.pid ? treeCpuTicks(child.pid) ?? 0 : 0),
    pid: () => (running() ? child!.pid : undefined),
  };
}

/** A folder for the PGlite databases, seeded from one template as the launcher does (a fresh PGlite initdb costs ~6 s of CPU each). */
async function pgliteRoot(opts: ProcessMeshOptions, started: { stop(): Promise<void> }[]): Promise<string> {
  let root = opts.bundles?.root;
  if (!root) {
    const made = mkdtempSync(join(tmpdir(), "shopmesh-pglite-"));
    symlinkSync(join(projectRoot, "node_modules"), join(made, "node_modules")); // the template maker imports PGlite from here
    started.push({ stop: async () => rmSync(made, { recursive: true, force: true }) });
    root = made;
  }
  mkdirSync(join(root, ".data"), { recursive: true });
  await seedPgliteFolders(root, serviceNames);
  return root;
}

export async function startProcessMesh(opts: ProcessMeshOptions = {}): Promise<ProcessMesh> {
  const started: { stop(): Promise<void> }[] = [];
  const processes = {} as Record<ProcessName, MeshProcess>;
  const stop = async () => {
    live.delete(stop);
    // SIGTERM first (they drain), SIGKILL for whatever is still there after 10 s.
    // The combined layout's host is every service's: one kill each is enough (the pid tells).
    const each = [...new Map(Object.values(processes).map((p) => [p.pid() ?? p.name, p])).values()];
    const force = setTimeout(() => each.forEach((p) => void p.kill("SIGKILL")), 10_000);
    await Promise.all(each.map((p) => p.kill("SIGTERM")));
    clearTimeout(force);
    await Promise.all(started.reverse().map((s) => s.stop().catch(() => {})));
  };
  stopAllOnInterrupt();
  live.add(stop);
  try {
    const pki = await createTestPki();
    const pglite = opts.database === "pglite";
    const [nats, redis, postgres] = await Promise.all([startNats(pki), startRedis(), pglite ? undefined : (opts.startPostgres?.() ?? startPostgres({ maxConnections: 200 }))]);
    started.push(nats, redis, ...(postgres ? [postgres] : []));
    const database = (name: ServiceName) => `shop_${name}`; // "order" is an SQL keyword
    if (postgres) for (const name of serviceNames) await postgres.createDatabase(database(name));
    const dataRoot = pglite ? await pgliteRoot(opts, started) : undefined;
    const databaseOf = (name: ServiceName): Record<string, string> => (postgres ? { DATABASE_URL: postgres.url(database(name)) } : { DATA_DIR: join(dataRoot!, ".data", name) });
    const certsDir = await pki.dir([...serviceNames, "gateway", "client"]);
    const ports = Object.fromEntries(await Promise.all([...serviceNames, "gateway"].map(async (n) => [n, { port: await stablePort(), metrics: await stablePort() }])));
    const addresses = Object.fromEntries(serviceNames.map((n) => [`${n.toUpperCase()}_ADDRESSES`, `127.0.0.1:${ports[n].port}`]));
    const common = { NATS_URL: nats.url, REDIS_URL: redis.url, CERTS_DIR: certsDir, LOG_LEVEL: "info", ...addresses, ...opts.env };
    const ownEnv = (name: ServiceName) => ({ PORT: String(ports[name].port), METRICS_PORT: String(ports[name].metrics), ...databaseOf(name), ...opts.envFor?.[name] });
    if (opts.layout === "combined") {
      const env = { ...common, ...Object.assign({}, ...serviceNames.map((n) => forHosted(n, ownEnv(n)))) };
      const host = managedProcess(serviceNames[0]!, "host", "launcher/host", [...serviceNames], ports[serviceNames[0]!].port, env, opts);
      // Each service's entry names it and acts on the host: killing one kills them all.
      for (const name of serviceNames) processes[name] = { ...host, name, port: ports[name].port };
    } else {
      for (const name of serviceNames) processes[name] = managedProcess(name, name, join("services", name, "main"), [], ports[name].port, { ...common, ...ownEnv(name) }, opts);
    }
    processes.gateway = managedProcess("gateway", "gateway", "gateway/main", [], ports.gateway.port, { ...common, PORT: String(ports.gateway.port), METRICS_PORT: String(ports.gateway.metrics), ...opts.envFor?.gateway }, opts);
    const gatewayUrl = `http://127.0.0.1:${ports.gateway.port}`;

    // A fresh channel per check: a long-lived one backs off (up to minutes) while its service is down.
    const tls = await pki.tls("client");
    const check = async (name: ServiceName) => {
      const health = healthClient(`127.0.0.1:${ports[name].port}`, name, tls);
      try {
        return await health.check("", 1_000).catch(() => "DOWN");
      } finally {
        health.close();
      }
    };
    // Waits on progress, not a deadline: a busy machine makes a start slower, not failed.
    const waitReady = async (name: ProcessName, stallMs = 60_000) => {
      let seen = processes[name].progress();
      let movedAt = Date.now();
      for (;;) {
        const ok = name === "gateway" ? await fetch(`${gatewayUrl}/healthz`).then((r) => r.ok, () => false) : (await check(name)) === "SERVING";
        if (ok) return;
        const now = processes[name].progress();
        if (now !== seen) [seen, movedAt] = [now, Date.now()];
        if (Date.now() - movedAt > stallMs || !processes[name].running()) throw new Error(`${name} ${processes[name].running() ? `made no progress for ${stallMs / 1000} s` : "exited"}; its last output:\n${processes[name].tail().join("\n")}`);
        await new Promise((r) => setTimeout(r, 250));
      }
    };
    const services = opts.layout === "combined" ? [processes[serviceNames[0]!]] : serviceNames.map((n) => processes[n]);
    for (const p of services) p.start();
    await Promise.all(serviceNames.map((n) => waitReady(n)));
    processes.gateway.start();
    await waitReady("gateway");
    const databaseUrl = (n: ServiceName) => {
      if (!postgres) throw new Error("the PGlite layout has no PostgreSQL server");
      return postgres.url(database(n));
    };
    return { pki, nats, redis, postgres, processes, gatewayUrl, databaseUrl, waitReady, health: check, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

// Ctrl-C (or SIGTERM) during a run stops every process started here, then exits 130.
const live = new Set<() => Promise<void>>();
let installed = false;
let interrupted = false;
function stopAllOnInterrupt(): void {
  if (installed) return;
  installed = true;
  const stopAll = (why: string, code: number) => {
    if (interrupted) return;
    interrupted = true;
    process.stderr.write(`\n${why}: stopping every process…\n`);
    void Promise.all([...live].map((stop) => stop())).finally(() => process.exit(code));
  };
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => stopAll(signal, 130));
  // A bug in the run itself must not leave servers behind either.
  process.on("uncaughtException", (err) => stopAll(`uncaught ${err.stack ?? err}`, 1));
  process.on("unhandledRejection", (err) => stopAll(`unhandled ${(err as Error)?.stack ?? err}`, 1));
}
