// Logs, traces and metrics for one process.
//
// - pino writes one JSON object per line; inside a call every line carries trace_id and span_id
//   (the mixin reads the active span), so a log line leads straight to its trace.
// - OpenTelemetry traces: a NodeTracerProvider with W3C traceparent propagation (trace context
//   only: nothing here reads or sets baggage). Spans are exported over OTLP/HTTP when
//   OTEL_EXPORTER_OTLP_ENDPOINT is set (the exporter is loaded only then); tests pass their own
//   exporter. Without either no span is recorded, and the RPC runtime makes its spans' ids without
//   the SDK (rpc/trace-context.ts).
// - Prometheus metrics in a per-process registry, served on a separate port by serveMetrics().
import { createServer, type Server } from "node:http";
import { trace } from "@opentelemetry/api";
import { ExportResultCode, W3CTraceContextPropagator, type ExportResult } from "@opentelemetry/core";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { AlwaysOffSampler, BatchSpanProcessor, type ReadableSpan, type SpanExporter, type SpanProcessor, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { pino, type DestinationStream, type Logger, type LoggerOptions } from "pino";
import { Registry, collectDefaultMetrics } from "prom-client";
import type { DescMethod } from "@bufbuild/protobuf";
import { activeContext, installAsyncContext } from "./async-context.js";

export type { Logger };

/** `destination`: where lines go (default stdout); benchmarks and tests pass their own. */
export function createLogger(service: string, level = process.env.LOG_LEVEL ?? "info", destination?: DestinationStream): Logger {
  const options: LoggerOptions = {
    level,
    base: { service },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin() {
      const span = trace.getSpan(activeContext())?.spanContext();
      return span ? { trace_id: span.traceId, span_id: span.spanId } : {};
    },
  };
  return destination ? pino(options, destination) : pino(options);
}

let provider: NodeTracerProvider | undefined;
let recording = Boolean(process.env.OTEL_EXPORTER_OTLP_ENDPOINT);

/**
 * Whether spans are recorded: an exporter was given to initTracing, or OTLP is configured (then a
 * host's own providers record too: launcher/host-tracing.ts). When false the RPC runtime does not
 * ask the SDK for spans at all, only makes their ids (rpc/trace-context.ts).
 */
export const spansRecorded = (): boolean => recording;

/**
 * Installs the process-wide tracer provider once. `exporter` overrides the OTLP exporter (tests
 * use an in-memory one); without either, spans still carry ids through logs and headers.
 */
export function initTracing(service: string, exporter?: SpanExporter): void {
  if (provider) return;
  const spanProcessors: SpanProcessor[] = [];
  if (exporter) spanProcessors.push(new SimpleSpanProcessor(exporter));
  else if (process.env.OTEL_EXPORTER_OTLP_ENDPOINT) spanProcessors.push(new BatchSpanProcessor(new LazyOtlpExporter()));
  provider = new NodeTracerProvider({
    resource: resourceFromAttributes({ "service.name": process.env.OTEL_SERVICE_NAME ?? service }),
    spanProcessors,
    // With nowhere to send spans, record none: each span is then only its ids (which logs and
    // traceparent headers carry on), not attributes, events and timings built to be dropped.
    ...(spanProcessors.length === 0 ? { sampler: new AlwaysOffSampler() } : {}),
  });
  recording = spanProcessors.length > 0;
  installAsyncContext();
  // One async storage for the process (async-context.ts); the W3C trace context propagator alone,
  // since nothing uses baggage (the default composite one would extract and inject it on every call).
  provider.register({ contextManager: null, propagator: new W3CTraceContextPropagator() });
}

/**
 * The OTLP/HTTP exporter, imported as tracing starts but only when spans go somewhere: imported
 * statically it cost every process ~1.5 MiB of heap (measured) where none are sent (deployments
 * without a collector, the benchmarks). The batch processor holds the first spans until its first
 * export, which waits for the import, so none is lost. (launcher/host-tracing.ts uses it too.)
 */
export class LazyOtlpExporter implements SpanExporter {
  readonly #exporter = import("@opentelemetry/exporter-trace-otlp-http").then((module) => {
    // A CommonJS package: Node gives its exports as the default too, and a bundle only as that.
    const { OTLPTraceExporter } = module.default ?? module;
    return new OTLPTraceExporter();
  });

  constructor() {
    this.#exporter.catch(() => {}); // a failed import is reported by export(), not as an unhandled rejection
  }

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.#exporter.then((exporter) => exporter.export(spans, done), (error: Error) => done({ code: ExportResultCode.FAILED, error }));
  }

  async shutdown(): Promise<void> {
    await (await this.#exporter.catch(() => undefined))?.shutdown();
  }

  async forceFlush(): Promise<void> {
    await (await this.#exporter.catch(() => undefined))?.forceFlush();
  }
}

export async function shutdownTracing(): Promise<void> {
  await provider?.shutdown();
  provider = undefined;
  recording = Boolean(process.env.OTEL_EXPORTER_OTLP_ENDPOINT);
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

type Labels = Record<string, string>;
interface Child { labels: Labels; count: number; sum: number; buckets: number[] }

/**
 * A call count and a latency histogram with one child per label set, each child found once and then
 * only added to. prom-client's own Counter and Histogram check and hash the labels of every
 * observation, bound children included; these give the registry the same series at scrape time
 * (Registry reads any metric's get(): the name, help, type and values its Histogram would give).
 */
class RpcMetric {
  readonly aggregator = "sum";
  #children = new Map<string, Child>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly type: "counter" | "histogram",
  ) {}

  /** The child of that label set (clients of several upstreams in one process share one). */
  child(labels: Labels): Child {
    const key = JSON.stringify(labels);
    let child = this.#children.get(key);
    if (!child) this.#children.set(key, (child = { labels, count: 0, sum: 0, buckets: new Array<number>(LATENCY_BUCKETS.length).fill(0) }));
    return child;
  }

  reset(): void {
    for (const child of this.#children.values()) {
      child.count = child.sum = 0;
      child.buckets.fill(0);
    }
  }

  /**
   * As prom-client's metrics give it to the registry's text format: a histogram's series name their
   * `le` (or nothing) as labels and the child's as shared labels, so default labels come between.
   */
  getForPromString() {
    const values: { labels: Labels; sharedLabels?: Labels; value: number; metricName?: string }[] = [];
    for (const { labels, count, sum, buckets } of this.#children.values()) {
      if (this.type === "counter") {
        values.push({ labels, value: count });
        continue;
      }
      const bucket = `${this.name}_bucket`;
      let total = 0;
      LATENCY_BUCKETS.forEach((le, i) => values.push({ labels: { le: String(le) }, sharedLabels: labels, value: (total += buckets[i]!), metricName: bucket }));
      values.push({ labels: { le: "+Inf" }, sharedLabels: labels, value: count, metricName: bucket });
      values.push({ labels: {}, sharedLabels: labels, value: sum, metricName: `${this.name}_sum` });
      values.push({ labels: {}, sharedLabels: labels, value: count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  /** Each series with all its labels (getMetricsAsJSON, cluster aggregation). */
  get() {
    const data = this.getForPromString();
    return { ...data, values: data.values.map(({ labels, sharedLabels, ...value }) => ({ ...value, labels: { ...labels, ...sharedLabels } })) };
  }
}

/** The index of the first bucket whose upper bound holds `seconds`, or the bucket count (only +Inf). */
function bucketOf(seconds: number): number {
  let i = 0;
  while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]!) i++;
  return i;
}

/**
 * RPC count and latency by service, method and status code, named as grpc-ecosystem's Prometheus
 * middleware names them (grpc_server_handled_total, grpc_client_handling_seconds, …).
 * Returns: call `record(method)` as a call starts, and the function it returns with the final code.
 */
export function rpcMetrics(registry: Registry, side: "server" | "client") {
  const register = (metric: RpcMetric) => (registry.registerMetric(metric as never), metric);
  const handled = metric(registry, `grpc_${side}_handled_total`, () =>
    register(new RpcMetric(`grpc_${side}_handled_total`, `RPCs completed on the ${side}, by method and status code${side === "client" ? " (after retries)" : ""}.`, "counter")));
  const latency = metric(registry, `grpc_${side}_handling_seconds`, () =>
    register(new RpcMetric(`grpc_${side}_handling_seconds`, `Time from the start of a call to its final status on the ${side}.`, "histogram")));
  // One child per method and code, found by two map lookups (no label hashing per call).
  const children = new Map<DescMethod, Map<string, { handled: Child; latency: Child }>>();
  const child = (method: DescMethod, code: string) => {
    let byCode = children.get(method);
    if (!byCode) children.set(method, (byCode = new Map()));
    let found = byCode.get(code);
    if (!found) {
      const labels = { grpc_service: method.parent.typeName, grpc_method: method.name, grpc_code: code };
      byCode.set(code, (found = { handled: handled.child(labels), latency: latency.child(labels) }));
    }
    return found;
  };
  return (method: DescMethod) => {
    const started = performance.now();
    return (code: string) => {
      const { handled, latency } = child(method, code);
      const seconds = (performance.now() - started) / 1000;
      handled.count++;
      latency.count++;
      latency.sum += seconds;
      const bucket = bucketOf(seconds);
      if (bucket < LATENCY_BUCKETS.length) latency.buckets[bucket]!++;
    };
  };
}
