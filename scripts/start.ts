// `npm start`: the whole mesh on this machine. Makes dev certificates if missing, starts every
// service that exists (each its own process, PGlite unless <SERVICE>_DATABASE_URL is set), shows
// their logs readably, waits until each answers SERVING on grpc.health.v1, prints where
// everything listens, and on Ctrl-C drains every service and exits.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { connect as tcpConnect } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { prettyFactory } from "pino-pretty";
import { ensureCerts, loadTls } from "../mesh/certs.js";
import { healthClient } from "../mesh/rpc/health-client.js";
import { natsServerConfig } from "../mesh/events/nats-config.js";
import { projectRoot } from "../mesh/service.js";
import { certificateHolders, natsServerIdentity, serviceNames, topology, type ServiceName } from "../mesh/topology.js";

const certsDir = process.env.CERTS_DIR ?? join(projectRoot, "certs");
const pretty = prettyFactory({ colorize: process.stdout.isTTY, translateTime: "SYS:HH:MM:ss", ignore: "pid,hostname,service", messageFormat: "{service} {msg}" });

function show(name: string, line: string) {
  if (!line.startsWith("{")) return void process.stdout.write(`${name.padEnd(12)} ${line}\n`);
  try {
    process.stdout.write(pretty(JSON.parse(line)));
  } catch {
    process.stdout.write(`${name.padEnd(12)} ${line}\n`);
  }
}

/** True when something accepts TCP connections on host:port. */
const reachable = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = tcpConnect({ host, port, timeout: 500 });
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
    socket.once("timeout", () => (socket.destroy(), resolve(false)));
  });

const which = (name: string) =>
  [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/local/sbin"].map((d) => join(d, name)).find((p) => existsSync(p));

const infrastructure: ChildProcess[] = [];

interface Infra {
  name: string;
  envVar: string;
  port: number;
  scheme: string;
  install: string;
  args: (dataDir: string) => string[];
  /** Writes what it needs in its data folder (its configuration) before it starts. */
  prepare?: (dataDir: string) => Promise<void>;
  /** What keeps working without it. */
  without: string;
}

/** Uses <envVar> if given, or a server already on its port, or starts the installed binary. */
async function ensureInfra(infra: Infra): Promise<string> {
  const url = process.env[infra.envVar] ?? `${infra.scheme}://127.0.0.1:${infra.port}`;
  if (process.env[infra.envVar] || (await reachable("127.0.0.1", infra.port))) return url;
  const bin = which(infra.name);
  if (!bin) {
    console.warn(`${infra.name} is not installed: ${infra.without}\n  Install it with: sudo apt-get install ${infra.install}   (or set ${infra.envVar})`);
    return url;
  }
  const dataDir = join(projectRoot, ".data", infra.name);
  mkdirSync(dataDir, { recursive: true });
  await infra.prepare?.(dataDir);
  // Its own process group: Ctrl-C in the terminal must not stop it before the services have drained.
  const child = spawn(bin, infra.args(dataDir), { stdio: ["ignore", "pipe", "pipe"], detached: true });
  infrastructure.push(child);
  // Problems only; "TLS handshake error: EOF" is our own reachability probe closing on nats-server.
  const problem = (line: string) => /\b(ERR|FTL|WRN|# WARNING)\b/.test(line) && !/TLS handshake error: EOF$/.test(line);
  for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on("line", (line) => problem(line) && show(infra.name, line));
  for (let i = 0; i < 100 && !(await reachable("127.0.0.1", infra.port)); i++) await new Promise((r) => setTimeout(r, 100));
  console.log(`${infra.name} started on :${infra.port}, data in ${dataDir}`);
  return url;
}

await ensureCerts(certsDir, certificateHolders, { serverOnly: [natsServerIdentity] });
const [natsUrl, redisUrl] = await Promise.all([
  ensureInfra({
    // Locked: TLS only, each service's certificate mapped to a NATS user with the permissions the
    // topology gives it (mesh/events/nats-config.ts); certs/client.crt is the operator's.
    name: "nats-server", envVar: "NATS_URL", port: 4222, scheme: "tls", install: "nats-server",
    args: (dir) => ["-c", join(dir, "nats-server.conf")],
    prepare: (dir) =>
      writeFile(join(dir, "nats-server.conf"), natsServerConfig({
        host: "127.0.0.1", port: 4222, storeDir: dir,
        tlsFiles: { ca: join(certsDir, "ca.crt"), cert: join(certsDir, `${natsServerIdentity}.crt`), key: join(certsDir, `${natsServerIdentity}.key`) },
      })),
    without: "services run, and their events wait in their outboxes until NATS is reachable.",
  }),
  ensureInfra({
    name: "redis-server", envVar: "REDIS_URL", port: 6379, scheme: "redis", install: "redis-server",
    args: (dir) => ["--port", "6379", "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"],
    without: "the catalog reads from its database without a cache.",
  }),
]);
const present = serviceNames.filter((name) => existsSync(join(projectRoot, "services", name, "main.ts")));
const children = new Map<ServiceName | "gateway", ChildProcess>();
let stopping = false;

function startService(name: ServiceName | "gateway", extraEnv: Record<string, string> = {}) {
  const databaseUrl = process.env[`${name.toUpperCase()}_DATABASE_URL`];
  const entry = name === "gateway" ? join("gateway", "main.ts") : join("services", name, "main.ts");
  const child = spawn(process.execPath, ["--import", "tsx", entry], {
    cwd: projectRoot,
    env: { ...process.env, CERTS_DIR: certsDir, NATS_URL: natsUrl, REDIS_URL: redisUrl, ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}), ...extraEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on("line", (line) => show(name, line));
  child.once("exit", (code, signal) => {
    children.delete(name);
    if (!stopping) {
      console.error(`\n${name} exited unexpectedly (${signal ?? `code ${code}`}); stopping the mesh.`);
      void stop(1);
    }
  });
  children.set(name, child);
}

async function stop(exitCode = 0) {
  if (stopping) return;
  stopping = true;
  console.log("\nstopping: draining every service…");
  const exits = [...children.values()].map((child) => new Promise((resolve) => child.once("exit", resolve)));
  for (const child of children.values()) child.kill("SIGTERM");
  const force = setTimeout(() => [...children.values()].forEach((c) => c.kill("SIGKILL")), 15_000);
  await Promise.all(exits);
  clearTimeout(force);
  // Infrastructure last: services drain their consumers and outboxes first.
  await Promise.all(infrastructure.map((child) => new Promise((resolve) => (child.once("exit", resolve), child.kill("SIGTERM")))));
  console.log("stopped.");
  process.exit(exitCode);
}
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());

async function waitHttp(url: string, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !stopping) {
    if ((await fetch(url).then((r) => r.ok, () => false))) return;
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`the gateway did not become ready at ${url}`);
}

async function waitServing(name: ServiceName, timeoutMs = 60_000) {
  const health = healthClient(`127.0.0.1:${topology[name].grpcPort}`, name, await loadTls(certsDir, "client"));
  const deadline = Date.now() + timeoutMs;
  try {
    while (Date.now() < deadline && !stopping) {
      if ((await health.check("", 1_000).catch(() => "DOWN")) === "SERVING") return;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`${name} did not become healthy within ${timeoutMs / 1000} s`);
  } finally {
    health.close();
  }
}

present.forEach((name) => startService(name));
const gatewayPort = Number(process.env.GATEWAY_PORT ?? 8080);
const gatewayMetricsPort = Number(process.env.GATEWAY_METRICS_PORT ?? 9450);
try {
  await Promise.all(present.map((name) => waitServing(name)));
  startService("gateway", { PORT: String(gatewayPort), METRICS_PORT: String(gatewayMetricsPort) });
  await waitHttp(`http://127.0.0.1:${gatewayPort}/readyz`);
} catch (err) {
  if (!stopping) console.error((err as Error).message);
  await stop(1);
}
if (stopping) await new Promise(() => {}); // stop() exits the process; print nothing meanwhile

const rows = present.map((name) => {
  const spec = topology[name];
  const db = process.env[`${name.toUpperCase()}_DATABASE_URL`] ? "PostgreSQL" : `PGlite in .data/${name}`;
  return `  ${name.padEnd(13)} grpcs://127.0.0.1:${spec.grpcPort}   metrics http://127.0.0.1:${spec.metricsPort}/metrics   ${db}`;
});
console.log(`
ShopMesh is up (${present.length} service${present.length === 1 ? "" : "s"}, mTLS with certificates in ${certsDir}):
${rows.join("\n")}
  gateway       http://127.0.0.1:${gatewayPort}   (REST/JSON, Connect, gRPC-Web; /openapi.json, /readyz)   metrics http://127.0.0.1:${gatewayMetricsPort}/metrics
  events        ${natsUrl} (JetStream, TLS with client certificates; certs/client.* is the operator)   dead letters: npm run dlq -- list
  cache         ${redisUrl}

Try it (buf curl over mTLS, as the "client" identity):
  npx buf curl --protocol grpc --http2-prior-knowledge --servername identity \\
    --cacert certs/ca.crt --cert certs/client.crt --key certs/client.key \\
    --data '{"email":"ada@example.com","password":"correct horse","displayName":"Ada"}' \\
    https://127.0.0.1:${topology.identity.grpcPort}/shop.identity.v1.IdentityService/Register

Ctrl-C stops everything.
`);
