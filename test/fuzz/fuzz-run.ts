// `npm run fuzz`: ≥ 10,000 generated hostile requests at the gateway's real HTTP port, with the
// whole mesh behind it (every service its own process on PostgreSQL, as in production). Fails on
// any 5xx but an open breaker's 503, any 4xx without a JSON {code, message}, any answer showing a
// stack trace, SQL or an internal address, any hang, innocent requests refused meanwhile, and any
// service not healthy afterwards. Prints one line of figures and the first failures, each with
// the command that repeats it.
//   FUZZ_SEED (random; printed), FUZZ_REQUESTS (10000), FUZZ_CONCURRENCY (8), FUZZ_CASE (one case only)
// Which cases share a connection depends on timing: a failure lists the cases answered just before
// it on its connection, and any bytes left on a connection between answers is a failure of its own.
import { describeBytes, fuzzCase, type FuzzCase, type FuzzContext, type FuzzStep } from "../support/fuzz-cases.js";
import { deriveRoutes } from "../../gateway/http-rules.js";
import { publicServices } from "../../gateway/upstreams.js";
import { serviceNames } from "../../mesh/topology.js";
import { createRng, seedFrom } from "../support/prng.js";
import { startProcessMesh, type ProcessMesh } from "../support/process-mesh.js";
import { shopHttp } from "../support/shop-http.js";
import { RawConnection, type RawOutcome, type RawResponse } from "../support/raw-http.js";

const seed = seedFrom("FUZZ_SEED");
const TARGET = Number(process.env.FUZZ_REQUESTS ?? 10_000);
const CONCURRENCY = Number(process.env.FUZZ_CONCURRENCY ?? 8);
const ONLY = process.env.FUZZ_CASE === undefined ? undefined : Number(process.env.FUZZ_CASE);
const ANSWER_TIMEOUT_MS = 15_000;
/** The request after an error on the same connection is trivial: it must not wait behind the error. */
const FOLLOW_UP_TIMEOUT_MS = 3_000;
const MAX_BODY_BYTES = 1_048_576;
const t0 = performance.now();
const log = (msg: string) => process.stderr.write(`[fuzz ${((performance.now() - t0) / 1000).toFixed(1)}s] ${msg}\n`);
const caseRng = (i: number) => createRng((seed + Math.imul(i + 1, 0x9e3779b1)) >>> 0);

// ---- what an answer must not be ----
let internalPorts: number[] = [];
const leaks: [RegExp, string][] = [
  [/\n\s+at [^\n]+:\d+:\d+\)?/, "a stack trace"],
  [/node:internal|node_modules\/|\/work\/|file:\/\/\//, "a source path"],
  [/invalid byte sequence|syntax error at or near|violates [a-z ]*constraint|duplicate key value|unsupported Unicode escape|\bSELECT\b.+\bFROM\b|\bINSERT INTO\b|\bUPDATE\b.+\bSET\b|relation "/i, "SQL text"],
  [/remote_addr|New streams cannot be created|GOAWAY|RST_STREAM|ECONNREFUSED|No connection established/i, "transport internals"],
];
function leak(text: string): string | undefined {
  for (const [pattern, what] of leaks) if (pattern.test(text)) return `${what}: …${text.match(pattern)![0].slice(0, 80)}…`;
  const port = internalPorts.find((p) => text.includes(`127.0.0.1:${p}`) || text.includes(`localhost:${p}`));
  return port ? `an internal address (127.0.0.1:${port})` : undefined;
}

/** The gRPC/Connect error code of an answer sent as HTTP 200 (gRPC-Web trailers, Connect end-stream). */
function rpcErrorCode(res: RawResponse): { code: string; message: string } | undefined {
  const body = res.body.toString("latin1");
  const grpc = res.headers["grpc-status"] ?? /grpc-status:\s*(\d+)/.exec(body)?.[1];
  if (grpc !== undefined && grpc !== "0") {
    const names: Record<string, string> = { "2": "unknown", "4": "deadline_exceeded", "13": "internal", "14": "unavailable", "15": "data_loss" };
    return { code: names[grpc] ?? `grpc ${grpc}`, message: decodeURIComponent(res.headers["grpc-message"] ?? /grpc-message:\s*([^\r\n]*)/.exec(body)?.[1] ?? "") };
  }
  const endStream = /"error":\{"code":"([a-z_]+)"(?:,"message":"((?:[^"\\]|\\.)*)")?/.exec(body);
  return endStream ? { code: endStream[1]!, message: endStream[2] ?? "" } : undefined;
}

const serverErrors = new Set(["unknown", "deadline_exceeded", "internal", "unavailable", "data_loss"]);
const breakerOpen = (message: string) => /circuit open/i.test(message);

/** Why this outcome is a failure, or undefined when it is a fine answer to a hostile request. */
function judge(outcome: RawOutcome, followUp: boolean, head: boolean): string | undefined {
  if (outcome.kind === "timeout") return `no answer in ${(followUp ? FOLLOW_UP_TIMEOUT_MS : ANSWER_TIMEOUT_MS) / 1000} s${outcome.partial ? ` (got only ${JSON.stringify(outcome.partial)})` : ""}`;
  if (outcome.kind === "closed") return `connection closed without an answer${outcome.partial ? ` (got ${JSON.stringify(outcome.partial)})` : ""}`;
  const { status, headers, body } = outcome.response;
  // No status line where an answer should start: the connection is out of step (the reader misframed an earlier answer).
  if (status < 100 || status > 599) return `no HTTP status line: ${JSON.stringify(body.toString("latin1").slice(0, 200))}`;
  const text = `${Object.entries(headers).map(([k, v]) => `${k}: ${k === "grpc-message" ? decodeURIComponent(v) : v}`).join("\n")}\n${body.toString("utf8")}`;
  const leaked = leak(text);
  if (leaked) return `${status} shows ${leaked}`;
  let json: { code?: unknown; message?: unknown } | undefined;
  try {
    json = JSON.parse(body.toString("utf8"));
  } catch {}
  if (status >= 500) {
    if (status === 503 && typeof json?.message === "string" && breakerOpen(json.message)) return undefined;
    return `${status} ${body.toString("utf8").slice(0, 200) || "(empty body)"}`;
  }
  if (status >= 400 && !head) { // an answer to HEAD has no body, by definition
    if (typeof json?.code !== "string" || typeof json.message !== "string" || json.message.trim() === "") return `${status} without a JSON {code, message}: ${JSON.stringify(body.toString("utf8").slice(0, 200))}`;
    return undefined;
  }
  const rpc = status === 200 ? rpcErrorCode(outcome.response) : undefined;
  if (rpc && serverErrors.has(rpc.code) && !(rpc.code === "unavailable" && breakerOpen(rpc.message))) return `200 carrying ${rpc.code}: ${rpc.message.slice(0, 200)}`;
  return undefined;
}

// ---- the run ----
interface Failure {
  index: number;
  kind: string;
  step: number;
  request: string;
  problem: string;
  /** The cases answered just before on the same connection: a keep-alive connection out of step shows here. */
  before?: string[];
}
const failures: Failure[] = [];
const byClass = new Map<string, number>();
let requests = 0;
let mesh: ProcessMesh | undefined;
let exitCode = 1;

/** Sends a case's requests on `conn` (a fresh one when the server has closed it), judging each answer. */
async function runCase(index: number, c: FuzzCase, port: number, conn: { current: RawConnection; history: string[] }): Promise<void> {
  for (const [n, step] of c.steps.entries()) {
    if (conn.current.closed) {
      conn.current = new RawConnection(port);
      conn.history = [];
    }
    await conn.current.opened.catch(() => {});
    // An answer (or part of one) nobody asked for yet: the last answer was framed wrong, or one request got two.
    if (conn.current.unread) failures.push({ index, kind: c.kind, step: n, request: step.describe(), problem: `bytes on the connection before the request was sent: ${JSON.stringify(conn.current.unread.slice(0, 200))}`, before: conn.history.slice(-3) });
    requests++;
    await conn.current.write(step.bytes);
    const followUp = n > 0;
    const head = step.bytes.subarray(0, 5).toString("latin1") === "HEAD ";
    const outcome = await conn.current.next(followUp ? FOLLOW_UP_TIMEOUT_MS : ANSWER_TIMEOUT_MS, head);
    const statusClass = outcome.kind === "response" ? `${String(outcome.response.status)[0]}xx` : outcome.kind;
    byClass.set(statusClass, (byClass.get(statusClass) ?? 0) + 1);
    const problem = judge(outcome, followUp, head);
    if (problem) failures.push({ index, kind: c.kind, step: n, request: step.describe(), problem, before: conn.history.slice(-3) });
    conn.history.push(`case ${index}${n ? ` request ${n + 1}` : ""} → ${outcome.kind === "response" ? outcome.response.status : outcome.kind}: ${step.describe().slice(0, 300)}`);
    const closing = outcome.kind !== "response" || /close/i.test(outcome.response.headers.connection ?? "");
    if (closing) {
      conn.current.close();
      conn.current = new RawConnection(port);
      conn.history = [];
      if (outcome.kind !== "response") return; // the rest of the case needed this connection
    }
  }
}

try {
  log(`seed ${seed}: starting PostgreSQL, nats-server, redis-server, 6 services and the gateway as processes…`);
  mesh = await startProcessMesh({
    env: { LOG_LEVEL: "warn" },
    envFor: {
      identity: { ADMIN_EMAIL: "admin@shop.test", ADMIN_PASSWORD: "fuzz admin password" },
      gateway: { RATE_LIMIT_POINTS: "10000000", RATE_LIMIT_BURST: "1000000", MAX_BODY_BYTES: String(MAX_BODY_BYTES) },
    },
  });
  const m = mesh;
  const shop = shopHttp(m.gatewayUrl);
  const json = shop.call;
  internalPorts = serviceNames.map((n) => m.processes[n].port);
  const port = m.processes.gateway.port;
  const email = `fuzz-${seed}@shop.test`;
  const password = "correct horse battery";
  await json("POST", "/v1/auth/register", { email, password, displayName: "Fuzz" });
  const login = await json("POST", "/v1/auth/login", { email, password });
  const admin = await json("POST", "/v1/auth/login", { email: "admin@shop.test", password: "fuzz admin password" });
  const products = (await json("GET", "/v1/products?pageSize=50")).body.products as { id: string }[];
  const shippingAddress = { recipientName: "Fuzz", addressLines: ["1 Edge St"], city: "Town", countryCode: "DE" };
  const order = await shop.placeOrder(login.body.accessToken, { lines: [{ productId: products[0]!.id, quantity: 1 }], shippingAddress }, "4242424242424242", `fuzz-${seed}`);
  if (login.status !== 200 || admin.status !== 200 || order.status !== 200) throw new Error(`setup failed: login ${login.status}, admin ${admin.status}, order ${order.status} ${JSON.stringify(order.body)}`);
  const services = publicServices.map(([s]) => s);
  const ctx: FuzzContext = {
    host: `127.0.0.1:${port}`,
    customerToken: login.body.accessToken,
    adminToken: admin.body.accessToken,
    userId: login.body.user.id,
    email,
    password,
    productIds: products.map((p) => p.id),
    orderId: order.body.order.id,
    routes: deriveRoutes(services),
    services,
    maxBodyBytes: MAX_BODY_BYTES,
  };
  log(`mesh up at ${m.gatewayUrl}; ${ctx.routes.length} REST routes, ${services.reduce((n, s) => n + s.methods.length, 0)} RPCs; sending ${ONLY === undefined ? `≥ ${TARGET} requests, ${CONCURRENCY} connections` : `case ${ONLY} only`}`);

  // Innocent callers, now and then: hostile input must not cost anyone else their answer.
  let innocentRefusals = 0;
  const innocent = async (index: number) => {
    for (const [what, answer] of [
      ["browse", await json("GET", "/v1/products?pageSize=1").catch(() => ({ status: 0, body: undefined }))],
      ["sign in", await json("POST", "/v1/auth/login", { email, password }).catch(() => ({ status: 0, body: undefined }))],
      ["list orders", await json("GET", "/v1/orders?pageSize=1", undefined, ctx.customerToken).catch(() => ({ status: 0, body: undefined }))],
    ] as const) {
      if (answer.status !== 200) {
        innocentRefusals++;
        failures.push({ index, kind: "innocent caller", step: 0, request: what, problem: `refused with ${answer.status} ${JSON.stringify(answer.body).slice(0, 160)} after hostile input` });
      }
    }
  };

  let next = 0;
  const worker = async () => {
    const conn = { current: new RawConnection(port), history: [] as string[] };
    while (ONLY === undefined ? requests < TARGET : next === 0) {
      const index = ONLY ?? next;
      next++;
      const c = fuzzCase(caseRng(index), ctx);
      if (ONLY !== undefined) for (const s of c.steps) log(`case ${index} (${c.kind}): ${describeBytes(s.bytes, ctx, 4_000)}`);
      await runCase(index, c, port, conn);
      if (index > 0 && index % 500 === 0) {
        await innocent(index);
        log(`${requests} requests, ${failures.length} failures`);
      }
    }
    conn.current.close();
  };
  await Promise.all(Array.from({ length: ONLY === undefined ? CONCURRENCY : 1 }, worker));
  const durationMs = performance.now() - t0;

  // ---- afterwards: every service SERVING, the gateway ready (a short bound: nothing was killed) ----
  const unhealthy: string[] = [];
  for (const name of serviceNames) {
    if (!m.processes[name].running()) unhealthy.push(`${name} exited`);
    else await m.waitReady(name, 10_000).catch(async () => unhealthy.push(`${name} ${await m.health(name)}`));
  }
  if (!m.processes.gateway.running()) unhealthy.push("gateway exited");
  else {
    let ready = 0;
    for (const end = Date.now() + 10_000; ready !== 200 && Date.now() < end; await new Promise((r) => setTimeout(r, 250))) ready = (await fetch(`${m.gatewayUrl}/readyz`).catch(() => undefined))?.status ?? 0;
    if (ready !== 200) unhealthy.push(`gateway /readyz ${ready}`);
  }
  for (const u of unhealthy) failures.push({ index: -1, kind: "afterwards", step: 0, request: "health", problem: u });

  const classes = ["2xx", "3xx", "4xx", "5xx", "closed", "timeout"].map((k) => `${k}=${byClass.get(k) ?? 0}`).join(" ");
  console.log(`fuzz: seed=${seed} requests=${requests} ${classes} failures=${failures.length} innocent_refused=${innocentRefusals} unhealthy=${unhealthy.length} duration=${(durationMs / 1000).toFixed(1)}s`);
  const kinds = new Map<string, number>();
  for (const f of failures) {
    const key = f.problem.replace(/[0-9a-f-]{36}/g, "<id>").replace(/\d+/g, "N").slice(0, 70);
    kinds.set(key, (kinds.get(key) ?? 0) + 1);
  }
  for (const [key, n] of [...kinds].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${String(n).padStart(5)} × ${key}`);
  const shown = new Set<string>();
  for (const f of failures) {
    const key = f.problem.replace(/\d+/g, "N").slice(0, 40);
    if (shown.has(key) || shown.size >= 16) continue;
    shown.add(key);
    console.log(`  FAIL case ${f.index} (${f.kind}${f.step ? `, request ${f.step + 1}` : ""}): ${f.problem}\n       request: ${f.request}${(f.before ?? []).map((b) => `\n       after, on the same connection: ${b}`).join("")}\n       repeat:  FUZZ_SEED=${seed} FUZZ_CASE=${f.index} npm run fuzz`);
  }
  exitCode = failures.length === 0 && (ONLY !== undefined || requests >= TARGET) ? 0 : 1;
} catch (err) {
  console.error(`fuzz run failed: ${(err as Error).stack ?? err}`);
} finally {
  await mesh?.stop();
}
process.exit(exitCode);
