// `npm start`: the whole mesh on this machine. Makes dev certificates if missing, starts every
// service that exists (each its own process, PGlite unless <SERVICE>_DATABASE_URL is set), shows
// their logs readably, waits until each answers SERVING on grpc.health.v1, prints where
// everything listens, and on Ctrl-C drains every service and exits.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { prettyFactory } from "pino-pretty";
import { ensureCerts, loadTls } from "../mesh/certs.js";
import { healthClient } from "../mesh/health-client.js";
import { projectRoot } from "../mesh/service.js";
import { certificateHolders, serviceNames, topology, type ServiceName } from "../mesh/topology.js";

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

await ensureCerts(certsDir, certificateHolders);
const present = serviceNames.filter((name) => existsSync(join(projectRoot, "services", name, "main.ts")));
const children = new Map<ServiceName, ChildProcess>();
let stopping = false;

function startService(name: ServiceName) {
  const databaseUrl = process.env[`${name.toUpperCase()}_DATABASE_URL`];
  const child = spawn(process.execPath, ["--import", "tsx", join("services", name, "main.ts")], {
    cwd: projectRoot,
    env: { ...process.env, CERTS_DIR: certsDir, ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}) },
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
  console.log("stopped.");
  process.exit(exitCode);
}
process.on("SIGINT", () => void stop());
process.on("SIGTERM", () => void stop());

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

present.forEach(startService);
try {
  await Promise.all(present.map((name) => waitServing(name)));
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

Try it (buf curl over mTLS, as the "client" identity):
  npx buf curl --protocol grpc --http2-prior-knowledge --servername identity \\
    --cacert certs/ca.crt --cert certs/client.crt --key certs/client.key \\
    --data '{"email":"ada@example.com","password":"correct horse","displayName":"Ada"}' \\
    https://127.0.0.1:${topology.identity.grpcPort}/shop.identity.v1.IdentityService/Register

Ctrl-C stops everything.
`);
