// `npm start`: the whole mesh on this machine, each process one bundle of compiled JavaScript
// (`npm run build`, scripts/build.mjs, skipped when nothing changed; a TypeScript loader in every
// process cost ~1.5 s of CPU and ~100 MiB per process at each start).
//  1. dev certificates if missing;
//  2. nats-server (locked, as mesh/events/nats-config.ts writes it), redis-server and a private
//     PostgreSQL with a database per service, each reused when already running (launcher/infra.ts);
//  3. the services, all in one host process or each in its own (SHOPMESH_LAYOUT, launcher/layout.ts),
//     and the gateway in its own, kept running (launcher/supervisor.ts) with one progress line per
//     service; then where everything listens.
// SHOPMESH_DATABASE=pglite: embedded PGlite per service even where PostgreSQL is installed.
// Ctrl-C drains the gateway, then the services, then stops what the launcher started. A second
// Ctrl-C kills at once. SHOPMESH_PORT_OFFSET moves every port (a second checkout, tests).
import { existsSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { get as httpGet } from "node:http";
import { join, relative } from "node:path";
import { prettyFactory } from "pino-pretty";
import { ensureCerts, loadTls } from "../mesh/certs.js";
import { natsServerConfig } from "../mesh/events/nats-config.js";
import { healthClient } from "../mesh/rpc/health-client.js";
import { projectRoot } from "../mesh/service.js";
import { certificateHolders, natsServerIdentity, serviceNames, topology, type ServiceName } from "../mesh/topology.js";
import { ensurePostgres, ensureServer, reachable, type Started } from "./infra.js";
import { seedPgliteFolders } from "./pglite-template.js";
import { startDashboard, type Dashboard } from "./dashboard/server.js";
import { StartProgress } from "./progress.js";
import { launcherPorts, MAX_PORT_OFFSET } from "./ports.js";
import { chosenLayout, forHosted, type Layout } from "./layout.js";
import { hostNodeFlags, processNodeFlags } from "./node-flags.js";
import { Supervised, type Member, type MemberSpec, type ProcessSpec } from "./supervisor.js";

const began = Date.now();
const root = projectRoot;
const offset = Number(process.env.SHOPMESH_PORT_OFFSET ?? 0);
if (!Number.isInteger(offset) || offset < 0 || offset > MAX_PORT_OFFSET) {
  console.error(`SHOPMESH_PORT_OFFSET must be a whole number 0-${MAX_PORT_OFFSET}, got "${process.env.SHOPMESH_PORT_OFFSET}"`);
  process.exit(2);
}
const ports = launcherPorts(offset);
const certsDir = process.env.CERTS_DIR ?? join(root, "certs");
const stallMs = Number(process.env.START_STALL_SECONDS ?? 60) * 1000;
let layout: Layout;
try {
  layout = chosenLayout(process.env.SHOPMESH_LAYOUT);
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}
const shown = (path: string) => (path.startsWith(root) ? relative(process.cwd(), path) || "." : path);
const pretty = prettyFactory({ colorize: process.stdout.isTTY, translateTime: "SYS:HH:MM:ss", ignore: "pid,hostname,service", messageFormat: "{service} {msg}" });

const present = serviceNames.filter((name) => existsSync(join(root, "services", name, "main.ts")));
let progress: StartProgress | undefined;
const say = (text: string) => (progress ? progress.say(text) : console.log(text));

// --- stopping, from any point of the start ---------------------------------------------------
/** Servers the launcher started; `starting` settles once every server it began has started or failed. */
const started: Started[] = [];
let starting: Promise<unknown> = Promise.resolve();
let processes: Supervised[] = [];
/** What the terminal and the dashboard show: each service and the gateway, whatever process runs it. */
let members: Member[] = [];
let dashboard: Dashboard | undefined;
let up = false;
let stopping = false;
/** Awaited after each step of the start: once stopping, the start goes no further. */
const notStopping = () => (stopping ? new Promise<never>(() => {}) : undefined);

async function stop(exitCode: number) {
  if (stopping) return;
  stopping = true;
  progress?.end();
  progress = undefined;
  console.log("\nstopping: draining the gateway, then the services…");
  const gateway = processes.find((p) => p.name === "gateway");
  await gateway?.stop();
  await Promise.all(processes.filter((p) => p !== gateway).map((p) => p.stop()));
  await dashboard?.stop(); // after the services: they send their last spans as they stop
  // Infrastructure last, including servers still starting: services drain their consumers and outboxes first.
  await starting;
  await Promise.all(started.map((s) => s.stop().catch(() => {})));
  console.log("stopped.");
  process.exit(exitCode);
}
let interrupts = 0;
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.on(signal, () => {
    if (++interrupts === 1) return void stop(0);
    console.log("killing everything now.");
    processes.forEach((p) => p.kill());
    process.exit(130);
  });
}

/** Problems the servers report; while stopping, their own shutdown noise is no news. */
const warn = (text: string) => void (stopping || say(text));

const laidOut = layout === "combined" ? "in one process" : "each in its own process";
console.log(`Starting ShopMesh: ${present.length} services ${laidOut} and the gateway (SHOPMESH_LAYOUT=${layout}; logs in ${shown(join(root, ".data", "logs"))}/)`);

// --- 1 and 2: certificates, infrastructure -----------------------------------------------------
// Assigned below, or the launcher stops there.
let nats!: Started, redis!: Started, postgres: Awaited<ReturnType<typeof ensurePostgres>>;
try {
  await ensureCerts(certsDir, certificateHolders, { serverOnly: [natsServerIdentity] });
  await notStopping(); // after a Ctrl-C, the start goes no further: stop() is taking everything down
  const track = <T extends Started | undefined>(s: T) => (s && started.push(s), s);
  const servers = [
    ensureServer({
      // Locked: TLS only, each service's certificate mapped to a NATS user with the permissions the
      // topology gives it; certs/client.crt is the operator's.
      name: "nats-server", envVar: "NATS_URL", port: ports.nats, scheme: "tls", install: "nats-server",
      args: (dir) => ["-c", join(dir, "nats-server.conf")],
      prepare: (dir) =>
        writeFile(join(dir, "nats-server.conf"), natsServerConfig({
          host: "127.0.0.1", port: ports.nats, storeDir: dir,
          tlsFiles: { ca: join(certsDir, "ca.crt"), cert: join(certsDir, `${natsServerIdentity}.crt`), key: join(certsDir, `${natsServerIdentity}.key`) },
        })),
      ready: /Server is ready/,
      // "TLS handshake error: EOF" is a reachability probe closing on it.
      problem: (line) => /\[(ERR|FTL|WRN)\]/.test(line) && !/TLS handshake error: EOF$/.test(line),
      without: "services run, and their events wait in their outboxes until NATS is reachable.",
    }, root, warn).then(track),
    ensureServer({
      name: "redis-server", envVar: "REDIS_URL", port: ports.redis, scheme: "redis", install: "redis-server",
      args: (dir) => ["--port", String(ports.redis), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"],
      ready: /Ready to accept connections/,
      problem: (line) => /# WARNING/.test(line) && !/overcommit_memory|TCP backlog/.test(line),
      without: "the catalog reads from its database without a cache; the gateway limits rates per process.",
    }, root, warn).then(track),
    // SHOPMESH_DATABASE=pglite keeps every database embedded even where PostgreSQL is installed.
    process.env.SHOPMESH_DATABASE === "pglite" ? undefined : ensurePostgres(root, ports.postgres, present, warn).then(track),
  ] as const;
  // Every server is waited for, even after one has failed: none may be left running unseen.
  const settled = await (starting = Promise.allSettled(servers));
  await notStopping();
  const failed = settled.find((r) => r.status === "rejected");
  if (failed) throw failed.reason;
  [nats, redis, postgres] = await Promise.all(servers); // all fulfilled: their values, typed
  await notStopping();
  if (!postgres) await seedPgliteFolders(root, present.filter((name) => !process.env[`${name.toUpperCase()}_DATABASE_URL`]));
  await notStopping();
} catch (err) {
  await notStopping(); // a server killed by the Ctrl-C that is stopping everything is no news
  console.error(`could not start: ${(err as Error).message}`);
  await stop(1);
}

// --- 3: the mesh ----------------------------------------------------------------------------
// A port already taken (often by another `npm start`) would only show as five crashes in a row.
const ownPorts = [ports.gateway, ports.gatewayMetrics, ports.dashboard, ...present.flatMap((n) => [ports.grpc(n), ports.metrics(n)])];
const taken = (await Promise.all(ownPorts.map(async (p) => ((await reachable("127.0.0.1", p)) ? p : undefined)))).filter(Boolean);
if (taken.length > 0) {
  console.error(`port${taken.length > 1 ? "s" : ""} ${taken.join(", ")} already in use (another \`npm start\`?). Stop it, or move every port with SHOPMESH_PORT_OFFSET=1000.`);
  await stop(1);
}
const clientTls = await loadTls(certsDir, "client");
const dashboardUrl = `http://127.0.0.1:${ports.dashboard}`;
const addresses = (name: ServiceName) => ({ [`${name.toUpperCase()}_ADDRESSES`]: `127.0.0.1:${ports.grpc(name)}` });
const common = {
  ...process.env,
  CERTS_DIR: certsDir,
  NATS_URL: nats.url,
  REDIS_URL: redis.url,
  SHOPMESH_SUPERVISED: "1",
  // Spans go to the dashboard's OTLP receiver (unless the user names a collector of their own),
  // in batches every 500 ms rather than the SDK's 5 s, so a request shows up while one looks.
  OTEL_EXPORTER_OTLP_ENDPOINT: process.env.OTEL_EXPORTER_OTLP_ENDPOINT ?? dashboardUrl,
  OTEL_BSP_SCHEDULE_DELAY: process.env.OTEL_BSP_SCHEDULE_DELAY ?? "500",
};

// Heap sizes by measurement (launcher/node-flags.ts). The bundles have source maps:
// NODE_OPTIONS=--enable-source-maps maps stack traces to the TypeScript (~10 MiB more per process).
const node = [process.execPath, ...processNodeFlags] as const;

/** A service's own variables: its ports, database and upstreams. */
function serviceVars(name: ServiceName): Record<string, string> {
  const databaseUrl = process.env[`${name.toUpperCase()}_DATABASE_URL`] ?? postgres?.urlFor(name);
  return {
    PORT: String(ports.grpc(name)),
    METRICS_PORT: String(ports.metrics(name)),
    ...Object.assign({}, ...topology[name].upstreams.map((u) => addresses(u as ServiceName))),
    ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
  };
}

function serviceMember(name: ServiceName): MemberSpec {
  return {
    name,
    address: `grpcs://127.0.0.1:${ports.grpc(name)}`,
    metricsUrl: `http://127.0.0.1:${ports.metrics(name)}/metrics`,
    logFile: join(root, ".data", "logs", `${name}.log`),
    // A new channel per question: a channel kept across refusals backs off for up to minutes.
    async healthy() {
      const health = healthClient(`127.0.0.1:${ports.grpc(name)}`, name, clientTls);
      try {
        return (await health.check("", 2_000)) === "SERVING";
      } finally {
        health.close();
      }
    },
  };
}

const serviceProcess = (name: ServiceName): ProcessSpec => ({
  name,
  command: [...node, join("dist", "services", name, "main.js")],
  cwd: root,
  env: { ...common, ...serviceVars(name) },
  members: [serviceMember(name)],
  stallMs,
  drainMs: 15_000,
});

/** Every service in one process (launcher/host.ts), each with its own variables. */
const hostProcess = (names: ServiceName[]): ProcessSpec => ({
  name: "services",
  command: [process.execPath, ...hostNodeFlags, join("dist", "launcher", "host.js"), ...names],
  cwd: root,
  env: { ...common, ...Object.assign({}, ...names.map((n) => forHosted(n, serviceVars(n)))) },
  members: names.map(serviceMember),
  stallMs,
  drainMs: 15_000,
});

const gatewayUrl = `http://127.0.0.1:${ports.gateway}`;
const gatewaySpec: ProcessSpec = {
  name: "gateway",
  command: [...node, join("dist", "gateway", "main.js")],
  cwd: root,
  env: { ...common, PORT: String(ports.gateway), METRICS_PORT: String(ports.gatewayMetrics), ...Object.assign({}, ...serviceNames.map(addresses)) },
  members: [{
    name: "gateway",
    address: gatewayUrl,
    metricsUrl: `http://127.0.0.1:${ports.gatewayMetrics}/metrics`,
    logFile: join(root, ".data", "logs", "gateway.log"),
    // A new connection per question, as for the services (no pooled connection to go stale).
    healthy: () =>
      new Promise<boolean>((resolve) => {
        const req = httpGet(`${gatewayUrl}/readyz`, { agent: false, timeout: 2_000 }, (res) => (res.resume(), resolve(res.statusCode === 200)));
        req.once("timeout", () => req.destroy()).once("error", () => resolve(false));
      }),
  }],
  stallMs,
  drainMs: 10_000,
};

const time = () => new Date().toTimeString().slice(0, 8);
const lastLines = (p: Member, n = 15) => p.recentLogs().slice(-n).map((l) => `    ${l}`).join("\n");

const serviceProcesses = layout === "combined" ? [hostProcess(present)] : present.map(serviceProcess);
processes = [...serviceProcesses, gatewaySpec].map((spec) => new Supervised(spec, {
  state(p, detail) {
    if (stopping) return;
    if (!up) {
      progress?.update();
      if (detail?.startsWith("stalled")) {
        say(`${p.name} is stuck ${detail.slice("stalled: ".length)}. Its log: ${shown(p.logFile)}\n${lastLines(p)}`);
        void stop(1);
      } else if (p.state === "failed") {
        say(`${p.name} failed: ${detail}. Its log: ${shown(p.logFile)}\n${lastLines(p)}`);
        void stop(1);
      } else if (p.state === "backing off") say(`${p.name} ${detail}`);
      if (members.every((q) => q.state === "serving")) void meshIsUp();
      return;
    }
    if (p.state === "backing off") console.log(`[${time()}] ${p.name} ${detail} (restart ${p.restarts + 1})`);
    else if (p.state === "serving") console.log(`[${time()}] ${p.name} is serving again (restarted ×${p.restarts})`);
    else if (p.state === "failed") console.log(`[${time()}] ${p.name} failed: ${detail}; not restarting it. Its log: ${shown(p.logFile)}\n${lastLines(p)}`);
    else if (detail?.startsWith("stalled")) console.log(`[${time()}] ${p.name} is ${detail}`);
  },
  line(p, line) {
    // The terminal shows warnings, errors and anything that is not a log entry (a crash's stack);
    // every line is in the process's log file and on the dashboard.
    if (stopping) return;
    let entry: { level?: number } | undefined;
    try {
      entry = line.startsWith("{") ? JSON.parse(line) : undefined;
    } catch {}
    if (!entry) say(`${p.name.padEnd(13)} ${line}`);
    else if ((entry.level ?? 0) >= 40) say(pretty(entry).trimEnd());
  },
}));
members = processes.flatMap((p) => p.members);

function meshIsUp() {
  if (up) return;
  up = true;
  progress?.end();
  progress = undefined;
  const rows = present.map((name) => `  ${name.padEnd(13)} grpcs://127.0.0.1:${ports.grpc(name)}   metrics http://127.0.0.1:${ports.metrics(name)}/metrics`);
  const database = postgres ? `PostgreSQL, a database per service (${decodeURIComponent(postgres.url).replace(/\/postgres(?=\?|$)/, "/<service>")}, ${postgres.how})` : "PGlite, embedded in each service (.data/<service>)";
  console.log(`
ShopMesh is up in ${((Date.now() - began) / 1000).toFixed(1)} s (mTLS with certificates in ${shown(certsDir)}):
${rows.join("\n")}
  gateway       ${gatewayUrl}   (REST/JSON, Connect, gRPC-Web; /openapi.json, /readyz)   metrics http://127.0.0.1:${ports.gatewayMetrics}/metrics
  databases     ${database}
  events        ${nats.url} (JetStream, TLS with client certificates; ${nats.how})
  cache         ${redis.url} (${redis.how})
  logs          ${shown(join(root, ".data", "logs"))}/<name>.log (the terminal shows warnings and errors)

  dashboard     ${dashboardUrl}   health, restarts and logs; events, outbox backlog, consumer lag; dead letters (replay); traces

Try it:
  curl ${gatewayUrl}/v1/products
  npx buf curl --protocol grpc --http2-prior-knowledge --servername catalog \\
    --cacert certs/ca.crt --cert certs/client.crt --key certs/client.key \\
    https://127.0.0.1:${ports.grpc("catalog")}/shop.catalog.v1.CatalogService/ListProducts

A crashed process is restarted. Ctrl-C stops everything.
`);
}

await notStopping();
dashboard = await startDashboard({ view: { processes: () => members, natsUrl: nats.url, certsDir, gatewayUrl }, host: "127.0.0.1", port: ports.dashboard });
await notStopping();
progress = new StartProgress(members);
processes.forEach((p) => p.start());
progress.update();
