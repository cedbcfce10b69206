// W3C trace context for a call whose span nobody records, without the tracing SDK. A span that is
// not recorded is only its ids: the trace it belongs to and its own span id, carried in the
// `traceparent` header to the next hop and in the context for log lines (telemetry.ts's mixin).
// Building them here costs a fraction of what the SDK's tracer, sampler and propagators do per call.
// When spans are recorded (an exporter is configured) and the trace is sampled, callers use the
// SDK as before (telemetry.ts: spansRecorded).
import { randomFillSync } from "node:crypto";
import { createTraceState, isSpanContextValid, TraceFlags, type SpanContext } from "@opentelemetry/api";
import { parseTraceParent, TRACE_PARENT_HEADER, TRACE_STATE_HEADER } from "@opentelemetry/core";

export const TRACEPARENT = TRACE_PARENT_HEADER;
export const TRACESTATE = TRACE_STATE_HEADER;

// Random bytes drawn from the CSPRNG in blocks, handed out as hex ids.
const POOL_BYTES = 4096;
const pool = Buffer.allocUnsafe(POOL_BYTES);
let used = POOL_BYTES;

function randomHex(bytes: number): string {
  if (used + bytes > POOL_BYTES) {
    randomFillSync(pool);
    used = 0;
  }
  const id = pool.toString("hex", used, (used += bytes));
  // All zeros is an invalid id (W3C); at 2^-64 it never happens, but it must not be sent.
  return /[^0]/.test(id) ? id : randomHex(bytes);
}

const newTraceId = (): string => randomHex(16);
const newSpanId = (): string => randomHex(8);

/**
 * The caller's span context from its traceparent (and tracestate), or undefined if there is none
 * valid: read as OpenTelemetry's W3CTraceContextPropagator reads it (its own parser).
 */
export function parseTraceparent(traceparent: string | undefined, tracestate?: () => string | undefined): SpanContext | undefined {
  if (traceparent === undefined) return undefined;
  const parent = parseTraceParent(traceparent);
  if (!parent) return undefined;
  const state = tracestate?.();
  if (state) parent.traceState = createTraceState(state);
  return parent;
}

/** Whether a parent asks for its children to be recorded (what a parent-based sampler follows). */
export const sampled = (parent: SpanContext): boolean => (parent.traceFlags & TraceFlags.SAMPLED) !== 0;

/**
 * A new span's context under `parent`, not sampled: the same trace (and tracestate) as a valid
 * parent, or a new trace. (The SDK's AlwaysOffSampler, or a parent-based sampler under an
 * unsampled parent, gives the same.)
 */
export function childSpanContext(parent: SpanContext | undefined): SpanContext {
  const valid = parent !== undefined && isSpanContextValid(parent);
  const child: SpanContext = { traceId: valid ? parent.traceId : newTraceId(), spanId: newSpanId(), traceFlags: TraceFlags.NONE };
  if (valid && parent.traceState) child.traceState = parent.traceState;
  return child;
}

/** The traceparent header naming `span` as the parent (as W3CTraceContextPropagator writes it). */
export const traceparentOf = (span: SpanContext): string =>
  `00-${span.traceId}-${span.spanId}-${span.traceFlags & TraceFlags.SAMPLED ? "01" : "00"}`;
