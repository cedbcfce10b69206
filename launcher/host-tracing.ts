// Spans of several services in one process, each under its own service.name.
//
// mesh/telemetry.ts installs one tracer provider per process, named after the first service that
// starts, and the runtime asks the global API for its tracers (trace.getTracer), so in a host every
// span would claim to come from that one service. Here the host registers, before any service
// starts, a global provider that hands each span to a provider of the service it belongs to, each
// exporting with its own resource. OpenTelemetry keeps the first global provider registered, so
// initTracing's own provider then exports nothing (its shutdown flushes nothing).
//
// Which service a span belongs to, from what the runtime puts on it: a server span names its
// contract (rpc.service), a consumer span its durable (`<service>-<consumer>`), and any other span
// (a client call, a publish) belongs to the span it runs under.
import { context as api, trace, type Context, type Span, type SpanOptions, type Tracer, type TracerProvider } from "@opentelemetry/api";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";
import { LazyOtlpExporter } from "../mesh/telemetry.js";
import { topology, type ServiceName } from "../mesh/topology.js";

export interface HostTracing {
  /** Flushes and closes every service's exporter; call once all services have stopped. */
  shutdown(): Promise<void>;
}

/**
 * Routes spans to one provider per service in `services` (and "host" for spans of none of them).
 * Does nothing when spans go nowhere (no OTEL_EXPORTER_OTLP_ENDPOINT): unexported spans are only
 * ids, and whose they are does not matter.
 */
export function installHostTracing(services: readonly ServiceName[], host: string): HostTracing {
  if (!process.env.OTEL_EXPORTER_OTLP_ENDPOINT) return { shutdown: async () => {} };
  const providers = new Map<string, NodeTracerProvider>(
    [...services, host].map((name) => [name, new NodeTracerProvider({
      resource: resourceFromAttributes({ "service.name": name }),
      spanProcessors: [new BatchSpanProcessor(new LazyOtlpExporter())],
    })]),
  );
  const byContract = new Map(services.map((name) => [topology[name].contract.typeName, name]));
  const owner = new WeakMap<Span, string>();

  const serviceOf = (options: SpanOptions | undefined, parent: Context): string => {
    const attributes = options?.attributes ?? {};
    const contract = byContract.get(String(attributes["rpc.service"]));
    if (contract) return contract;
    const durable = attributes["messaging.consumer.group.name"];
    const consumer = typeof durable === "string" ? durable.slice(0, durable.indexOf("-")) : "";
    if (providers.has(consumer)) return consumer;
    const parentSpan = trace.getSpan(parent);
    return (parentSpan && owner.get(parentSpan)) ?? host;
  };

  const tracerFor = (name: string, version?: string): Tracer => {
    const startSpan = (spanName: string, options?: SpanOptions, ctx: Context = api.active()): Span => {
      const service = serviceOf(options, ctx);
      const span = providers.get(service)!.getTracer(name, version).startSpan(spanName, options, ctx);
      owner.set(span, service);
      return span;
    };
    // startActiveSpan(name, [options, [context,]] fn): the span is active while fn runs.
    const startActiveSpan = (spanName: string, ...rest: unknown[]) => {
      const fn = rest.pop() as (span: Span) => unknown;
      const [options, ctx = api.active()] = rest as [SpanOptions | undefined, Context | undefined];
      const span = startSpan(spanName, options, ctx);
      return api.with(trace.setSpan(ctx, span), fn, undefined, span);
    };
    return { startSpan, startActiveSpan } as Tracer;
  };
  const routing: TracerProvider = { getTracer: tracerFor };
  trace.setGlobalTracerProvider(routing);
  return { shutdown: async () => void (await Promise.all([...providers.values()].map((p) => p.shutdown()))) };
}
