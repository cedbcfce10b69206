// The public edge. One HTTP/1.1 port serves:
//   REST/JSON from the contracts' google.api.http routes (Server-Sent Events for streams),
//   the Connect protocol (JSON and binary) and gRPC-Web,
//   for the RPCs the contracts expose at the edge (see access.ts), and nothing else;
//   /healthz, /readyz and /openapi.json. (Metrics have a port of their own: see gateway.ts.)
// Every request gets a request id, CORS for configured origins, a body size limit, bearer-token
// verification and a rate limit before it reaches a service over mTLS, and one access log line.
// Whatever is refused, from a request Node's HTTP parser cannot read to a failed upstream, is
// answered with the same JSON error body.
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { context, INVALID_SPAN_CONTEXT, propagation, ROOT_CONTEXT, SpanKind, trace, type Span } from "@opentelemetry/api";
import { Counter, Histogram, type Registry } from "prom-client";
import { spansRecorded, type Logger } from "../mesh/telemetry.js";
import { childSpanContext, parseTraceparent } from "../mesh/rpc/trace-context.js";
import type { Authenticator } from "./auth.js";
import { deriveRoutes } from "./http-rules.js";
import type { EdgeCall } from "./proxy.js";
import type { PublicReads } from "./public-reads.js";
import type { RateLimiter } from "./rate-limit.js";
import { BodyRefused, discardRest, tooLarge, type BodyLimits } from "./request-body.js";
import { handleRest, sendError, sendJson } from "./rest.js";
import { createRpcHandler } from "./rpc.js";
import { publicServices, type Upstreams } from "./upstreams.js";

export interface EdgeOptions {
  upstreams: Upstreams;
  auth: Authenticator;
  rateLimiter: RateLimiter;
  logger: Logger;
  metrics: Registry;
  corsOrigins: readonly string[];
  maxBodyBytes: number;
  /** The longest wait for more of a request body that has not ended (then 408). */
  bodyIdleTimeoutMs: number;
  /** Proxies in front of the gateway that append to X-Forwarded-For (0: clients connect directly). */
  trustedProxyHops: number;
  /** The cache of public reads (REST GETs); without it every read goes to its service. */
  publicReads?: PublicReads;
  /** True while every upstream answers SERVING (for /readyz). */
  ready(): Promise<boolean>;
  openapi: object;
}

/** How long a refused body may still be read (and dropped) before its connection is closed. */
const LINGER_MS = 5_000;

/** Why Node's HTTP parser refused a request (its error code), as status, code and message. */
function parserRefusal(code: string | undefined): [number, string, string] {
  switch (code) {
    case "HPE_HEADER_OVERFLOW": return [431, "resource_exhausted", "the request headers are too large"];
    case "ERR_HTTP_REQUEST_TIMEOUT": return [408, "deadline_exceeded", "the request did not arrive in time"];
    case "HPE_INVALID_METHOD": return [400, "invalid_argument", "unknown HTTP method"];
    case "HPE_INVALID_VERSION": return [400, "invalid_argument", "unsupported HTTP version"];
    case "HPE_INVALID_HEADER_TOKEN": return [400, "invalid_argument", "a header contains a character that is not allowed"];
    case "HPE_UNEXPECTED_CONTENT_LENGTH": case "HPE_INVALID_CONTENT_LENGTH": return [400, "invalid_argument", "invalid or conflicting Content-Length headers"];
    case "HPE_INVALID_TRANSFER_ENCODING": case "HPE_INVALID_CHUNK_SIZE": return [400, "invalid_argument", "the chunked body is malformed"];
    case "HPE_INVALID_URL": return [400, "invalid_argument", "the request target is not valid"];
    default: return [400, "invalid_argument", "the request is not valid HTTP/1.1"];
  }
}

/**
 * Answers a request Node's HTTP parser refused with the edge's JSON error body (Node's own answer
 * has none), then closes the connection: the parser cannot tell where the next request starts.
 */
function refuseUnparsable(err: NodeJS.ErrnoException, socket: Duplex): number | undefined {
  const inProgress = (socket as Duplex & { _httpMessage?: ServerResponse })._httpMessage;
  if (err.code === "ECONNRESET" || !socket.writable || inProgress?.headersSent) {
    socket.destroy();
    return undefined;
  }
  const [status, code, message] = parserRefusal(err.code);
  refuseOnSocket(socket, status, code, message);
  return status;
}

/** Writes the edge's JSON error answer straight to a socket Node's server has given up, and closes it. */
function refuseOnSocket(socket: Duplex, status: number, code: string, message: string, headers = ""): void {
  const body = JSON.stringify({ code, message, details: [] });
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: application/json; charset=utf-8\r\n${headers}` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  );
}

/** The request target as a URL: anything Node's parser let through that is no URL is the caller's error. */
function requestUrl(target: string | undefined): URL {
  try {
    return new URL(target ?? "/", "http://edge");
  } catch {
    throw new ConnectError("the request target is not a valid URL", Code.InvalidArgument);
  }
}

function httpMetrics(registry: Registry) {
  const requests = new Counter({ name: "http_requests_total", help: "Requests at the edge by route and status.", labelNames: ["route", "method", "status"], registers: [registry] });
  const latency = new Histogram({
    name: "http_request_duration_seconds",
    help: "Time to answer a request at the edge, by route and status.",
    labelNames: ["route", "method", "status"],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  });
  // Children bound once per label set: looking labels up costs more than counting.
  const children = new Map<string, { requests: ReturnType<typeof requests.labels>; latency: ReturnType<typeof latency.labels> }>();
  return (route: string, method: string, status: number, seconds: number) => {
    const key = `${route} ${method} ${status}`;
    let child = children.get(key);
    if (!child) {
      const labels = { route, method, status: String(status) };
      children.set(key, (child = { requests: requests.labels(labels), latency: latency.labels(labels) }));
    }
    child.requests.inc();
    child.latency.observe(seconds);
  };
}

/**
 * Client address for rate limiting. X-Forwarded-For is written by whoever sends it, so only the
 * entries our own proxies appended count: the one `trustedProxyHops` from the right. With no
 * trusted proxy, the socket's address.
 */
function clientAddress(req: IncomingMessage, trustedProxyHops: number): string {
  const hops = (req.headers["x-forwarded-for"]?.toString() ?? "").split(",").map((h) => h.trim()).filter(Boolean);
  if (trustedProxyHops > 0 && hops.length >= trustedProxyHops) return hops[hops.length - trustedProxyHops]!;
  return req.socket.remoteAddress ?? "unknown";
}

export function createEdgeServer(opts: EdgeOptions): Server {
  const routes = deriveRoutes(publicServices.map(([s]) => s));
  const calls = new WeakMap<IncomingMessage, EdgeCall>();
  const bodyLimits: BodyLimits = { maxBytes: opts.maxBodyBytes, idleTimeoutMs: opts.bodyIdleTimeoutMs };
  const serveRpc = createRpcHandler({ upstreams: opts.upstreams, body: bodyLimits, logger: opts.logger });
  const record = httpMetrics(opts.metrics);
  const restOptions = { routes, upstreams: opts.upstreams, body: bodyLimits, publicReads: opts.publicReads };
  const tracer = trace.getTracer("shopmesh-gateway");
  const openapiText = JSON.stringify(opts.openapi);
  // Probes may come often and from anywhere: check the upstreams at most once a second.
  let lastReady: { at: number; ok: Promise<boolean> } | undefined;
  const readiness = () => {
    if (!lastReady || Date.now() - lastReady.at > 1_000) lastReady = { at: Date.now(), ok: opts.ready().catch(() => false) };
    return lastReady.ok;
  };

  const cors = (req: IncomingMessage, res: ServerResponse) => {
    if (opts.corsOrigins.length === 0) return;
    res.setHeader("vary", "origin"); // answers differ by origin: shared caches must keep them apart
    const origin = req.headers.origin;
    if (!origin || !opts.corsOrigins.includes(origin)) return;
    res.setHeader("access-control-allow-origin", origin);
    res.setHeader("access-control-expose-headers", "x-request-id, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, grpc-status, grpc-message, grpc-status-details-bin, connect-protocol-version");
  };

  async function handle(req: IncomingMessage, res: ServerResponse, requestId: string, report: EdgeCall["report"]): Promise<string> {
    const url = requestUrl(req.url);
    cors(req, res);
    if (req.method === "OPTIONS" && req.headers["access-control-request-method"]) {
      if (res.hasHeader("access-control-allow-origin")) {
        res.setHeader("access-control-allow-methods", "GET, POST, PUT, PATCH, DELETE");
        res.setHeader("access-control-allow-headers", req.headers["access-control-request-headers"] ?? "authorization, content-type");
        res.setHeader("access-control-max-age", "600");
      }
      res.writeHead(204).end();
      return "preflight";
    }
    switch (url.pathname) {
      case "/healthz":
        sendJson(res, 200, { status: "ok" });
        return "/healthz";
      case "/readyz": {
        const ready = await readiness();
        sendJson(res, ready ? 200 : 503, { status: ready ? "ready" : "upstreams not ready" });
        return "/readyz";
      }
      case "/openapi.json":
        res.writeHead(200, { "content-type": "application/json" }).end(openapiText);
        return "/openapi.json";
    }
    const length = Number(req.headers["content-length"] ?? 0);
    if (length > opts.maxBodyBytes) throw tooLarge(bodyLimits);

    // Only the gateway speaks for users: whatever a client sends under our internal headers goes.
    for (const name of Object.keys(req.headers)) if (/^x-shop-/i.test(name)) delete req.headers[name];
    // A refused token still counts against the caller's address: floods of bad tokens are limited too.
    let user: EdgeCall["user"];
    let refused: unknown;
    try {
      user = await opts.auth.authenticate(req.headers.authorization);
    } catch (err) {
      refused = err;
    }
    const decision = await opts.rateLimiter.take(user ? `user:${user.id}` : `ip:${clientAddress(req, opts.trustedProxyHops)}`);
    res.setHeader("ratelimit-limit", String(decision.limit));
    res.setHeader("ratelimit-remaining", String(decision.remaining));
    res.setHeader("ratelimit-reset", String(decision.resetSeconds));
    if (!decision.allowed) {
      sendJson(res, 429, { code: "resource_exhausted", message: `rate limit exceeded: retry in ${decision.resetSeconds} s`, details: [] }, { "retry-after": String(decision.resetSeconds) });
      return "rate-limited";
    }
    if (refused) throw refused;
    // Aborted only when the client left before the answer was complete (the upstream call is then
    // cancelled): aborting after every finished answer cost a DOMException each time.
    const abort = new AbortController();
    res.once("close", () => res.writableFinished || abort.abort());
    const idempotencyKey = req.headers["idempotency-key"]?.toString();
    const call: EdgeCall = { user, requestId, idempotencyKey, signal: abort.signal, report };
    calls.set(req, call);
    const connectRoute = /^\/shop\.[a-z]+\.v1\.[A-Za-z]+Service\/[A-Za-z]+$/.test(url.pathname);
    if (connectRoute) {
      await serveRpc(req, res, url.pathname, call);
      return "connect";
    }
    const restRoute = await handleRest(restOptions, req, res, url, call);
    if (!restRoute) sendJson(res, 404, { code: "not_found", message: `no route for ${req.method} ${url.pathname}`, details: [] });
    return restRoute ? "rest" : "unmatched";
  }

  const server = createServer({ maxHeaderSize: 16 * 1024, requestTimeout: 60_000, headersTimeout: 10_000 }, (req, res) => {
    const started = performance.now();
    let upstreamError: string | undefined;
    const report = (err: ConnectError) => void (upstreamError = err.rawMessage);
    const requestId = /^[\w.:-]{1,128}$/.test(String(req.headers["x-request-id"] ?? "")) ? String(req.headers["x-request-id"]) : randomUUID();
    req.headers["x-request-id"] = requestId;
    res.setHeader("x-request-id", requestId);
    const serve = (span: Span) => {
      handle(req, res, requestId, report)
        .catch((err) => {
          if (err instanceof BodyRefused) {
            // The rest of that body may still be coming: close rather than parse it as a request,
            // once the client has stopped sending (or had its time): see discardRest.
            const text = JSON.stringify({ code: err.code, message: err.message, details: [] });
            res.writeHead(err.status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text), connection: "close" });
            res.write(text);
            return discardRest(req, err, LINGER_MS).then(() => (res.end(), err.status === 413 ? "too-large" : "body-timeout"));
          }
          if (!(err instanceof ConnectError)) opts.logger.error({ err, request_id: requestId }, "unhandled error at the edge");
          sendError(res, err, Boolean(req.headers.authorization));
          return "error";
        })
        .then((route) => {
          const finish = () => {
            const seconds = (performance.now() - started) / 1000;
            record(route ?? "error", req.method ?? "", res.statusCode, seconds);
            span.setAttribute("http.response.status_code", res.statusCode);
            span.end();
            opts.logger.info(
              { request_id: requestId, method: req.method, path: req.url, status: res.statusCode, duration_ms: Math.round(seconds * 100_000) / 100, user: calls.get(req)?.user?.id, upstream_error: upstreamError },
              "http",
            );
          };
          if (res.writableEnded) finish();
          else res.once("close", finish);
        });
    };
    // Health probes (the launcher's, a load balancer's), several a second, would bury the traces
    // of real requests: they get a span that records nothing.
    const path = req.url?.split("?")[0];
    if (path === "/healthz" || path === "/readyz") serve(trace.wrapSpanContext(INVALID_SPAN_CONTEXT));
    else if (!spansRecorded()) {
      // Nothing records spans: the request's span is only its ids (the caller's trace continued,
      // or a new one), for the services' traceparent and the log lines, made without the SDK.
      const span = trace.wrapSpanContext(childSpanContext(parseTraceparent(req.headers.traceparent?.toString(), () => req.headers.tracestate?.toString())));
      context.with(trace.setSpan(ROOT_CONTEXT, span), serve, undefined, span);
    } else {
      const parent = propagation.extract(ROOT_CONTEXT, req.headers);
      tracer.startActiveSpan(`${req.method} edge`, { kind: SpanKind.SERVER, attributes: { "http.request.method": req.method ?? "", "url.path": req.url ?? "" } }, parent, serve);
    }
  });
  // Node hands a CONNECT request (a tunnel) to this event, and without a listener drops the
  // connection unanswered. The edge tunnels nothing.
  server.on("connect", (req: IncomingMessage, socket: Duplex) => {
    refuseOnSocket(socket, 405, "unimplemented", "CONNECT is not served here: the edge is no proxy", "allow: GET, POST, PUT, PATCH, DELETE\r\n");
    record("connect-method", "CONNECT", 405, 0);
    opts.logger.info({ method: req.method, path: req.url, status: 405 }, "http");
  });
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    const status = refuseUnparsable(err, socket);
    if (status === undefined) return;
    record("unparsable", "", status, 0);
    opts.logger.info({ status, reason: err.code }, "http refused before parsing");
  });
  return server;
}
