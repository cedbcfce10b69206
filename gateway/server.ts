// The public edge. One HTTP/1.1 port serves:
//   REST/JSON from the contracts' google.api.http routes (Server-Sent Events for streams),
//   the Connect protocol (JSON and binary) and gRPC-Web, for the public services,
//   /healthz, /readyz, /metrics and /openapi.json.
// Every request gets a request id, CORS for configured origins, a body size limit, bearer-token
// verification and a rate limit before it reaches a service over mTLS, and one access log line.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { randomUUID } from "node:crypto";
import type { DescService, Message } from "@bufbuild/protobuf";
import { createContextKey, createContextValues, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { context, propagation, SpanKind, trace } from "@opentelemetry/api";
import { Counter, Histogram, type Registry } from "prom-client";
import type { Logger } from "../mesh/telemetry.js";
import type { Authenticator } from "./auth.js";
import { deriveRoutes } from "./http-rules.js";
import { proxyStream, proxyUnary, type EdgeCall } from "./proxy.js";
import type { RateLimiter } from "./rate-limit.js";
import { handleRest, PayloadTooLarge, sendError, sendJson } from "./rest.js";
import { publicServices, type Upstreams } from "./upstreams.js";

export interface EdgeOptions {
  upstreams: Upstreams;
  auth: Authenticator;
  rateLimiter: RateLimiter;
  logger: Logger;
  metrics: Registry;
  corsOrigins: readonly string[];
  maxBodyBytes: number;
  /** Proxies in front of the gateway that append to X-Forwarded-For (0: clients connect directly). */
  trustedProxyHops: number;
  /** True while every upstream answers SERVING (for /readyz). */
  ready(): Promise<boolean>;
  openapi: object;
}

const edgeCallKey = createContextKey<EdgeCall | undefined>(undefined, { description: "edge call" });
const edgeCallOf = (ctx: HandlerContext): EdgeCall => ({ ...ctx.values.get(edgeCallKey)!, signal: ctx.signal });

/** The Connect and gRPC-Web handlers: each public RPC forwards to its service. */
function connectHandler(upstreams: Upstreams, calls: WeakMap<IncomingMessage, EdgeCall>, maxBodyBytes: number) {
  return connectNodeAdapter({
    readMaxBytes: maxBodyBytes,
    contextValues: (req) => createContextValues().set(edgeCallKey, calls.get(req as IncomingMessage)),
    routes(router) {
      for (const [service] of publicServices) {
        const impl: Record<string, unknown> = {};
        for (const method of service.methods) {
          impl[method.localName] =
            method.methodKind === "server_streaming"
              ? (req: Message, ctx: HandlerContext) => proxyStream(upstreams, method, req, edgeCallOf(ctx))
              : (req: Message, ctx: HandlerContext) => proxyUnary(upstreams, method, req, edgeCallOf(ctx));
        }
        router.service(service, impl as ServiceImpl<DescService>);
      }
    },
  });
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
  return (route: string, method: string, status: number, seconds: number) => {
    const labels = { route, method, status: String(status) };
    requests.inc(labels);
    latency.observe(labels, seconds);
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
  const connect = connectHandler(opts.upstreams, calls, opts.maxBodyBytes);
  const record = httpMetrics(opts.metrics);
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

  async function handle(req: IncomingMessage, res: ServerResponse, requestId: string): Promise<string> {
    const url = new URL(req.url ?? "/", "http://edge");
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
      case "/metrics":
        res.writeHead(200, { "content-type": opts.metrics.contentType }).end(await opts.metrics.metrics());
        return "/metrics";
      case "/openapi.json":
        res.writeHead(200, { "content-type": "application/json" }).end(openapiText);
        return "/openapi.json";
    }
    const length = Number(req.headers["content-length"] ?? 0);
    if (length > opts.maxBodyBytes) throw new PayloadTooLarge();

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
    const abort = new AbortController();
    res.once("close", () => abort.abort());
    const idempotencyKey = req.headers["idempotency-key"]?.toString();
    const call: EdgeCall = { user, requestId, idempotencyKey, signal: abort.signal };
    calls.set(req, call);
    const connectRoute = /^\/shop\.[a-z]+\.v1\.[A-Za-z]+Service\/[A-Za-z]+$/.test(url.pathname);
    if (connectRoute) {
      await new Promise<void>((resolve) => {
        res.once("close", resolve);
        connect(req, res);
      });
      return "connect";
    }
    const restRoute = await handleRest({ routes, upstreams: opts.upstreams, maxBodyBytes: opts.maxBodyBytes }, req, res, url, call);
    if (!restRoute) sendJson(res, 404, { code: "not_found", message: `no route for ${req.method} ${url.pathname}`, details: [] });
    return restRoute ? "rest" : "unmatched";
  }

  return createServer({ maxHeaderSize: 16 * 1024, requestTimeout: 60_000, headersTimeout: 10_000 }, (req, res) => {
    const started = performance.now();
    const requestId = /^[\w.:-]{1,128}$/.test(String(req.headers["x-request-id"] ?? "")) ? String(req.headers["x-request-id"]) : randomUUID();
    req.headers["x-request-id"] = requestId;
    res.setHeader("x-request-id", requestId);
    const parent = propagation.extract(context.active(), req.headers);
    tracer.startActiveSpan(`${req.method} edge`, { kind: SpanKind.SERVER, attributes: { "http.request.method": req.method ?? "", "url.path": req.url ?? "" } }, parent, (span) => {
      handle(req, res, requestId)
        .catch((err) => {
          if (err instanceof PayloadTooLarge) return sendJson(res, 413, { code: "resource_exhausted", message: `the request body exceeds ${opts.maxBodyBytes} bytes`, details: [] }), "too-large";
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
              { request_id: requestId, method: req.method, path: req.url, status: res.statusCode, duration_ms: Math.round(seconds * 100_000) / 100, user: calls.get(req)?.user?.id },
              "http",
            );
          };
          if (res.writableEnded) finish();
          else res.once("close", finish);
        });
    });
  });
}
