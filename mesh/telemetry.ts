// Logs, traces and metrics for one process.
//
// - pino writes one JSON object per line; inside a call every line carries trace_id and span_id
//   (the mixin reads the active span), so a log line leads straight to its trace.
// - OpenTelemetry traces: a NodeTracerProvider with W3C traceparent propagation. Spans are
//   exported over OTLP/HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set; tests pass their own exporter.
// - Prometheus metrics in a per-process registry, served on a separate port by serveMetrics().
import { createServer, type Server } from "node:http";
import { trace } from "@opentelemetry/api";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { AlwaysOffSampler, BatchSpanProcessor, type SpanExporter, type SpanProcessor, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { pino, type Logger } from "pino";
import { Counter, Histogram, Registry, collectDefaultMetrics } from "prom-client";
import type { DescMethod } from "@bufbuild/protobuf";
import { installAsyncContext } from "./async-context.js";

export type { Logger };

export function createLogger(service: string, level = process.env.LOG_LEVEL ?? "info"): Logger {
  return pino({
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin() {
      const span = trace.getActiveSpan()?.spanContext();
      return span ? { trace_id: span.traceId, span_id: span.spanId } : {};
    },
  });
}

let provider: NodeTracerProvider | undefined;

/**
 * Installs the process-wide tracer provider once. `exporter` overrides the OTLP exporter (tests
 * use an in-memory one); without either, spans still carry ids through logs and headers.
 */
export function initTracing(service: string, exporter?: SpanExporter): void {
  if (provider) return;
  const spanProcessors: SpanProcessor[] = [];
  if (exporter) spanProcessors.push(new SimpleSpanProcessor(exporter));
  else if (process.env.OTEL_EXPORTER_OTLP_ENDPOINT) spanProcessors.push(new BatchSpanProcessor(new OTLPTraceExporter()));
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": process.env.OTEL_SERVICE_NAME ?? service }),
    spanProcessors,
    // With nowhere to send spans, record none: each span is then only its ids (which logs and
    // traceparent headers carry on), not attributes, events and timings built to be dropped.
    ...(spanProcessors.length === 0 ? { sampler: new AlwaysOffSampler() } : {}),
  });
  installAsyncContext();
  provider.register({ contextManager: null }); // one async storage for the process: async-context.ts
}

export async function shutdownTracing(): Promise<void> {
  await provider?.shutdown();
  provider = undefined;
}

/** A metrics registry with Node's default process metrics. */
export function createMetricsRegistry(service: string): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ service });
  collectDefaultMetrics({ register: registry });
  return registry;
}

/** Serves GET /metrics in the Prometheus text format on its own port (not the gRPC port). */
export async function serveMetrics(registry: Registry, port: number, host = "127.0.0.1"): Promise<Server> {
  const server = createServer(async (req, res) => {
    if (req.method !== "GET" || req.url !== "/metrics") {
      res.writeHead(404).end("not found\n");
      return;
    }
    res.writeHead(200, { "content-type": registry.contentType }).end(await registry.metrics());
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(port, host, resolve));
  return server;
}

/** The registry's metric of that name, created on first use (clients and servers may share a registry). */
export function metric<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * RPC count and latency by service, method and status code, named as grpc-ecosystem's Prometheus
 * middleware names them (grpc_server_handled_total, grpc_client_handling_seconds, …).
 * Returns: call `record(method)` as a call starts, and the function it returns with the final code.
 */
export function rpcMetrics(registry: Registry, side: "server" | "client") {
  const labelNames = ["grpc_service", "grpc_method", "grpc_code"];
  const handled = metric(registry, `grpc_${side}_handled_total`, () => new Counter({
    name: `grpc_${side}_handled_total`,
    help: `RPCs completed on the ${side}, by method and status code${side === "client" ? " (after retries)" : ""}.`,
    labelNames,
    registers: [registry],
  }));
  const latency = metric(registry, `grpc_${side}_handling_seconds`, () => new Histogram({
    name: `grpc_${side}_handling_seconds`,
    help: `Time from the start of a call to its final status on the ${side}.`,
    labelNames,
    buckets: LATENCY_BUCKETS,
    registers: [registry],
  }));
  // The labelled children, bound once per method and code: finding them per call (hashing the
  // label values) costs more than counting.
  const children = new Map<DescMethod, Map<string, { handled: Counter.Internal; latency: Histogram.Internal<string> }>>();
  const child = (method: DescMethod, code: string) => {
    let byCode = children.get(method);
    if (!byCode) children.set(method, (byCode = new Map()));
    let found = byCode.get(code);
    if (!found) {
      const labels = { grpc_service: method.parent.typeName, grpc_method: method.name, grpc_code: code };
      byCode.set(code, (found = { handled: handled.labels(labels), latency: latency.labels(labels) }));
    }
    return found;
  };
  return (method: DescMethod) => {
    const started = performance.now();
    return (code: string) => {
      const { handled, latency } = child(method, code);
      handled.inc();
      latency.observe((performance.now() - started) / 1000);
    };
  };
}
