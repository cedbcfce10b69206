// One internal hop, measured: typed unary calls per second over mTLS through the ShopMesh runtime
// (logging, metrics, tracing, validation on) against raw node:http2 request/response over the
// same mTLS, and against bare grpc-js (same adapter, no interceptors) to show what the runtime's
// interceptors cost. Same process, same load generator, same run.
//   npm run bench:hop        (BENCH_SECONDS=5 BENCH_CONCURRENCY=64 by default)
// HOP_CALLS=n makes exactly n calls of each case (after HOP_WARMUP calls) and prints nothing more:
// bench/hop-instructions.ts runs that under callgrind, where instruction counts hold steady on a
// busy machine and wall-clock rates do not.
import http2 from "node:http2";
import { once } from "node:events";
import { execFileSync } from "node:child_process";
import * as grpc from "@grpc/grpc-js";
import { create, toJson } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { pino } from "pino";
import { Registry } from "prom-client";
import { IdentityService, Role, UserSchema } from "../gen/shop/identity/v1/identity_pb.js";
import { createCa, type TlsFiles } from "../mesh/certs.js";
import { createClient } from "../mesh/rpc/client.js";
import { grpcServiceDefinition } from "../mesh/rpc/grpc-adapter.js";
import { serve } from "../mesh/rpc/serve.js";
import { initTracing } from "../mesh/telemetry.js";
import { closedLoop, type LoadResult } from "./load.js";

const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 64);
const load = { concurrency, durationMs: seconds * 1000, warmupMs: 1000 };
// Under callgrind everything runs ~50× slower: deadlines long enough not to fire there.
const deadlineMs = process.env.HOP_CALLS === undefined ? 5_000 : 600_000;

const ID = "018f0000-0000-7000-8000-000000000001";
const user = create(UserSchema, {
  id: ID,
  email: "ada@example.com",
  displayName: "Ada Lovelace",
  roles: [Role.CUSTOMER],
  createTime: timestampFromDate(new Date()),
  updateTime: timestampFromDate(new Date()),
});

const ca = await createCa("bench CA");
const tlsOf = async (service: string): Promise<TlsFiles> => ({ ca: ca.cert, ...(await ca.issue(service)) });
const [serverTls, clientTls] = [await tlsOf("identity"), await tlsOf("client")];

/** One case: a ready client and server, the call to repeat, and how to take them down. */
interface Case {
  call: () => Promise<unknown>;
  close: () => Promise<void> | void;
}

async function rawHttp2(): Promise<Case> {
  const body = JSON.stringify(toJson(UserSchema, user));
  const server = http2.createSecureServer({ key: serverTls.key, cert: serverTls.cert, ca: serverTls.ca, requestCert: true, rejectUnauthorized: true });
  server.on("stream", (stream) => {
    stream.resume();
    stream.on("end", () => {
      stream.respond({ ":status": 200, "content-type": "application/json" });
      stream.end(body);
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  const session = http2.connect(`https://127.0.0.1:${port}`, { ca: clientTls.ca, key: clientTls.key, cert: clientTls.cert, servername: "identity" });
  const request = () =>
    new Promise<string>((resolve, reject) => {
      const req = session.request({ ":method": "POST", ":path": "/user", "content-type": "application/json" });
      let data = "";
      req.setEncoding("utf8");
      req.on("data", (c) => (data += c));
      req.on("end", () => resolve(data));
      req.on("error", reject);
      req.end(JSON.stringify({ id: ID }));
    });
  return {
    call: request,
    close: () => {
      session.close();
      server.close();
    },
  };
}

async function bareGrpc(): Promise<Case> {
  const server = new grpc.Server();
  server.addService(grpcServiceDefinition(IdentityService), { getUser: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, { user }) });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      "127.0.0.1:0",
      grpc.ServerCredentials.createSsl(Buffer.from(serverTls.ca), [{ cert_chain: Buffer.from(serverTls.cert), private_key: Buffer.from(serverTls.key) }], true),
      (err, p) => (err ? reject(err) : resolve(p)),
    ),
  );
  const def = grpcServiceDefinition(IdentityService).getUser!;
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(clientTls.ca), Buffer.from(clientTls.key), Buffer.from(clientTls.cert)), {
    "grpc.ssl_target_name_override": "identity",
  });
  const call = () =>
    new Promise((resolve, reject) =>
      client.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, { id: ID }, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (e, r) => (e ? reject(e) : resolve(r))),
    );
  return {
    call,
    close: () => {
      client.close();
      server.forceShutdown();
    },
  };
}

async function meshRuntime(): Promise<Case> {
  initTracing("bench");
  const logger = pino({ level: "info" }, pino.destination({ dest: "/dev/null", sync: false }));
  const metrics = new Registry();
  const server = await serve({
    service: IdentityService,
    impl: {
      getUser: () => ({ user }),
      register: () => ({}),
      login: () => ({}),
      updateProfile: () => ({}),
      getJwks: () => ({}),
    },
    tls: serverTls,
    logger,
    metrics,
    port: 0,
    host: "127.0.0.1",
  });
  const client = createClient(IdentityService, { upstream: "identity", addresses: [`127.0.0.1:${server.port}`], tls: clientTls, metrics, policy: { timeoutMs: deadlineMs } });
  return {
    call: () => client.getUser({ id: ID }),
    close: async () => {
      client.close();
      await server.drain();
    },
  };
}

/** Exactly `calls` calls, `concurrency` at a time. */
async function fixedCalls(call: () => Promise<unknown>, calls: number): Promise<void> {
  let left = calls;
  const worker = async () => {
    while (left-- > 0) await call();
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, calls) }, worker));
}

const cases: [string, () => Promise<Case>][] = [
  ["raw node:http2 + mTLS (JSON)", rawHttp2],
  ["bare grpc-js + mTLS (protobuf)", bareGrpc],
  ["ShopMesh runtime (all interceptors)", meshRuntime],
];
const only = process.env.BENCH_ONLY; // e.g. BENCH_ONLY=ShopMesh to profile one case
const chosen = cases.filter(([name]) => !only || name.includes(only));

if (process.env.HOP_CALLS !== undefined) {
  // HOP_TOGGLE=1 (under callgrind --instr-atstart=no): instrument the measured calls alone.
  const instrument = (on: boolean) => process.env.HOP_TOGGLE && execFileSync("callgrind_control", ["-i", on ? "on" : "off", String(process.pid)], { stdio: "ignore" });
  for (const [, setup] of chosen) {
    const { call, close } = await setup();
    await call(); // connected before calls pile up
    await fixedCalls(call, Number(process.env.HOP_WARMUP ?? 500));
    instrument(true);
    await fixedCalls(call, Number(process.env.HOP_CALLS));
    instrument(false);
    await close();
  }
  process.exit(0);
}

console.log(`one internal hop: ${concurrency} calls in flight, ${seconds} s per case after 1 s warm-up, node ${process.version}\n`);
const results: Record<string, LoadResult> = {};
for (const [name, setup] of chosen) {
  const { call, close } = await setup();
  results[name] = await closedLoop(call, load);
  await close();
}
const baseline = Object.values(results)[0]!.perSecond;
const grpcJs = Object.entries(results).find(([name]) => name.startsWith("bare grpc-js"))?.[1].perSecond ?? NaN;
console.log("case".padEnd(38), "calls/s".padStart(9), "p50 ms".padStart(8), "p99 ms".padStart(8), "vs raw".padStart(7), "vs grpc-js".padStart(11), "CPU µs/call".padStart(12), "errors".padStart(7));
for (const [name, r] of Object.entries(results)) {
  console.log(
    name.padEnd(38),
    r.perSecond.toFixed(0).padStart(9),
    r.p50Ms.toFixed(2).padStart(8),
    r.p99Ms.toFixed(2).padStart(8),
    (r.perSecond / baseline).toFixed(2).padStart(7),
    (r.perSecond / grpcJs).toFixed(2).padStart(11),
    r.cpuUsPerCall.toFixed(0).padStart(12),
    String(r.errors).padStart(7),
  );
}
process.exit(0);
