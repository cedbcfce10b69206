// The edge, measured: GET /v1/products/{id} through the gateway (REST routing, rate limit in
// Redis, mTLS gRPC to catalog, Redis cache, JSON mapping) against a raw node:http server that
// answers the same JSON, with one load generator in one run. The mesh runs in this process;
// the load comes over loopback HTTP/1.1 with keep-alive.
//   npm run bench:edge            (BENCH_SECONDS=5 BENCH_CONCURRENCY=32 by default)
import { createServer } from "node:http";
import { Agent, request } from "node:http";
import { once } from "node:events";
import { startGateway } from "../gateway/gateway.js";
import { demoProducts } from "../services/catalog/demo.js";
import { startMesh } from "../test/support/mesh.js";
import { closedLoop, type LoadResult } from "./load.js";

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 32);
const load = { concurrency, durationMs: seconds * 1000, warmupMs: 1000 };

const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
const get = (port: number, path: string) =>
  new Promise<void>((resolve, reject) => {
    const req = request({ host: "127.0.0.1", port, path, agent }, (res) => {
      res.resume();
      res.on("end", () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on("error", reject);
    req.end();
  });

console.log(`GET /v1/products/{id}: ${concurrency} requests in flight, ${seconds} s per case after 1 s warm-up; starting the mesh…`);
const mesh = await startMesh();
const addresses = Object.fromEntries(Object.entries(mesh.services).map(([name, s]) => [`${name.toUpperCase()}_ADDRESSES`, s.address]));
const gateway = await startGateway({
  ...process.env,
  PORT: "0",
  METRICS_PORT: "0",
  LOG_LEVEL: "warn",
  CERTS_DIR: await mesh.pki.dir(["gateway"]),
  REDIS_URL: mesh.redis.url,
  RATE_LIMIT_POINTS: "100000000",
  ...addresses,
});
const id = demoProducts[0]!.id;
const path = `/v1/products/${id}`;
try {
  // The baseline answers exactly what the gateway answers.
  const body = await new Promise<string>((resolve) => request({ host: "127.0.0.1", port: gateway.port, path }, (res) => {
    let text = "";
    res.on("data", (c) => (text += c)).on("end", () => resolve(text));
  }).end());
  const raw = createServer((_req, res) => res.writeHead(200, { "content-type": "application/json; charset=utf-8" }).end(body));
  raw.listen(0, "127.0.0.1");
  await once(raw, "listening");
  const rawPort = (raw.address() as { port: number }).port;

  const results: [string, LoadResult][] = [
    ["raw node:http, same JSON", await closedLoop(() => get(rawPort, path), load)],
    ["gateway → catalog (REST, gRPC+mTLS, cache)", await closedLoop(() => get(gateway.port, path), load)],
  ];
  raw.close();
  const baseline = results[0]![1].perSecond;
  console.log(`\n${"case".padEnd(44)} ${"req/s".padStart(8)} ${"p50 ms".padStart(8)} ${"p99 ms".padStart(8)} ${"vs raw".padStart(7)} ${"errors".padStart(7)}`);
  for (const [name, r] of results) {
    console.log(`${name.padEnd(44)} ${r.perSecond.toFixed(0).padStart(8)} ${r.p50Ms.toFixed(2).padStart(8)} ${r.p99Ms.toFixed(2).padStart(8)} ${(r.perSecond / baseline).toFixed(2).padStart(7)} ${String(r.errors).padStart(7)}`);
  }
} finally {
  agent.destroy();
  await gateway.stop();
  await mesh.stop();
}
process.exit(0);
