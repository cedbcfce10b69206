// The dashboard's trace view: spans arrive over OTLP/HTTP as JSON (what
// @opentelemetry/exporter-trace-otlp-http sends from every process the launcher starts with
// OTEL_EXPORTER_OTLP_ENDPOINT), and the last traces stay in memory, bounded in count and size.
// Everything here comes from the network: each field is checked and cut to size, never trusted.

export interface SpanView {
  traceId: string;
  spanId: string;
  /** Absent for a root; may name a span that never arrives (a caller outside the mesh). */
  parentSpanId?: string;
  name: string;
  kind: "internal" | "server" | "client" | "producer" | "consumer" | "unspecified";
  /** The exporting process's resource service.name. */
  service: string;
  startMs: number;
  endMs: number;
  /** The status message of a span that ended in error ("" when it has none). */
  error?: string;
  attributes: Record<string, string>;
}

export interface TraceSummary {
  traceId: string;
  /** The earliest span whose parent is not in the trace. */
  root: { name: string; service: string };
  services: string[];
  spans: number;
  startMs: number;
  durationMs: number;
  errors: number;
}

export interface TraceDetail {
  summary: TraceSummary;
  /** Parents before children, siblings by start time; depth is the nesting level. */
  spans: (SpanView & { depth: number })[];
}

const KINDS = ["unspecified", "internal", "server", "client", "producer", "consumer"] as const;
const MAX_ATTRIBUTES = 24;
const MAX_TEXT = 300;

const text = (value: unknown, max = MAX_TEXT): string => (typeof value === "string" ? value : value === undefined ? "" : String(value)).slice(0, max);
const hexId = (value: unknown, length: number): string | undefined =>
  typeof value === "string" && value.length === length && /^[0-9a-f]+$/i.test(value) && !/^0+$/.test(value) ? value.toLowerCase() : undefined;

/** OTLP JSON times are nanoseconds since the epoch, as a decimal string (or a number). */
function nanosToMs(value: unknown): number | undefined {
  if (typeof value === "number" && Number.isFinite(value)) return value / 1e6;
  if (typeof value !== "string" || !/^\d{1,20}$/.test(value)) return undefined;
  return Number(BigInt(value) / 1_000n) / 1_000;
}

/** An OTLP AnyValue as display text. */
function anyValue(value: unknown): string {
  if (!value || typeof value !== "object") return "";
  const v = value as Record<string, unknown>;
  if ("stringValue" in v) return text(v.stringValue);
  for (const key of ["intValue", "doubleValue", "boolValue"]) if (key in v) return text(v[key]);
  if ("arrayValue" in v) return text(JSON.stringify(v.arrayValue));
  return "";
}

function attributesOf(list: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (!Array.isArray(list)) return out;
  for (const kv of list.slice(0, MAX_ATTRIBUTES)) {
    if (kv && typeof kv === "object" && typeof kv.key === "string") out[text(kv.key, 100)] = anyValue(kv.value);
  }
  return out;
}

/** The spans of one ExportTraceServiceRequest in JSON; malformed spans are skipped. */
export function spansFromOtlpJson(body: unknown): SpanView[] {
  const spans: SpanView[] = [];
  const resourceSpans = (body as { resourceSpans?: unknown })?.resourceSpans;
  if (!Array.isArray(resourceSpans)) throw new Error("not an OTLP ExportTraceServiceRequest: resourceSpans is missing");
  for (const rs of resourceSpans) {
    const service = attributesOf(rs?.resource?.attributes)["service.name"] || "unknown";
    for (const scope of Array.isArray(rs?.scopeSpans) ? rs.scopeSpans : []) {
      for (const s of Array.isArray(scope?.spans) ? scope.spans : []) {
        const traceId = hexId(s?.traceId, 32);
        const spanId = hexId(s?.spanId, 16);
        const startMs = nanosToMs(s?.startTimeUnixNano);
        const endMs = nanosToMs(s?.endTimeUnixNano);
        if (!traceId || !spanId || startMs === undefined || endMs === undefined) continue;
        const statusCode = Number(s.status?.code ?? 0);
        spans.push({
          traceId,
          spanId,
          parentSpanId: hexId(s.parentSpanId, 16),
          name: text(s.name, 200) || "(unnamed)",
          kind: KINDS[Number(s.kind)] ?? "unspecified",
          service: text(service, 100),
          startMs,
          endMs: Math.max(endMs, startMs),
          error: statusCode === 2 ? text(s.status?.message) : undefined,
          attributes: attributesOf(s.attributes),
        });
      }
    }
  }
  return spans;
}

/** Roughly what a span holds in memory (UTF-16 strings). */
const spanBytes = (span: SpanView) => 2 * JSON.stringify(span).length;

/**
 * The last `maxTraces` traces (oldest first seen is dropped first), each at most `maxSpansPerTrace`
 * spans and `maxTraceBytes`, all of them at most `maxBytes`: counts alone let large spans (every
 * attribute at its limit) grow the launcher by gigabytes and a trace's page to megabytes.
 */
export class TraceStore {
  private readonly traces = new Map<string, { spans: SpanView[]; bytes: number }>();
  private bytes = 0;

  constructor(readonly maxTraces = 200, readonly maxSpansPerTrace = 500, readonly maxBytes = 16 * 1024 ** 2, readonly maxTraceBytes = 512 * 1024) {}

  add(spans: readonly SpanView[]): void {
    for (const span of spans) {
      const size = spanBytes(span);
      let trace = this.traces.get(span.traceId);
      if (trace && (trace.spans.length >= this.maxSpansPerTrace || trace.bytes + size > this.maxTraceBytes || trace.spans.some((s) => s.spanId === span.spanId))) continue;
      if (!trace) {
        if (size > this.maxTraceBytes) continue;
        trace = { spans: [], bytes: 0 };
        this.traces.set(span.traceId, trace);
      }
      while ((this.traces.size > this.maxTraces || this.bytes + size > this.maxBytes) && this.traces.size > 1) this.dropOldest(span.traceId);
      trace.spans.push(span);
      trace.bytes += size;
      this.bytes += size;
    }
  }

  private dropOldest(keep: string) {
    const [oldest, entry] = this.traces.entries().next().value!;
    this.traces.delete(oldest);
    if (oldest === keep) return void this.traces.set(oldest, entry); // the trace being added goes last; the next oldest goes
    this.bytes -= entry.bytes;
  }

  /** The most recent traces first (by start time). */
  list(limit = 50): TraceSummary[] {
    return [...this.traces.entries()]
      .map(([id, { spans }]) => summarize(id, spans))
      .sort((a, b) => b.startMs - a.startMs)
      .slice(0, limit);
  }

  get(traceId: string): TraceDetail | undefined {
    const spans = this.traces.get(traceId.toLowerCase())?.spans;
    if (!spans?.length) return undefined;
    return { summary: summarize(traceId, spans), spans: waterfall(spans) };
  }
}

function summarize(traceId: string, spans: readonly SpanView[]): TraceSummary {
  const ids = new Set(spans.map((s) => s.spanId));
  const byStart = [...spans].sort((a, b) => a.startMs - b.startMs);
  const root = byStart.find((s) => !s.parentSpanId || !ids.has(s.parentSpanId)) ?? byStart[0]!;
  const startMs = byStart[0]!.startMs;
  return {
    traceId,
    root: { name: root.name, service: root.service },
    services: [...new Set(byStart.map((s) => s.service))],
    spans: spans.length,
    startMs,
    durationMs: Math.max(...spans.map((s) => s.endMs)) - startMs,
    errors: spans.filter((s) => s.error !== undefined).length,
  };
}

function waterfall(spans: readonly SpanView[]): (SpanView & { depth: number })[] {
  const ids = new Set(spans.map((s) => s.spanId));
  const children = new Map<string | undefined, SpanView[]>();
  for (const span of spans) {
    const parent = span.parentSpanId && ids.has(span.parentSpanId) ? span.parentSpanId : undefined;
    children.set(parent, [...(children.get(parent) ?? []), span]);
  }
  const out: (SpanView & { depth: number })[] = [];
  const seen = new Set<string>(); // a span naming itself (or a cycle) as parent is shown once
  const visit = (parent: string | undefined, depth: number) => {
    for (const span of (children.get(parent) ?? []).sort((a, b) => a.startMs - b.startMs)) {
      if (seen.has(span.spanId)) continue;
      seen.add(span.spanId);
      out.push({ ...span, depth });
      visit(span.spanId, depth + 1);
    }
  };
  visit(undefined, 0);
  for (const span of spans) if (!seen.has(span.spanId)) out.push({ ...span, depth: 0 });
  return out;
}
