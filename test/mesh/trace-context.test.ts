// Trace context without an exporter: no span is recorded, yet every call still has its ids. The
// server continues the caller's trace (W3C traceparent, and tracestate as sent), each hop gets a
// span id of its own, log lines inside a call carry both, and a call with no trace starts one.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Writable } from "node:stream";
import { Registry } from "prom-client";
import { context, createTraceState, ROOT_CONTEXT, trace, TraceFlags, type SpanContext } from "@opentelemetry/api";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { serve, type RunningServer } from "../../mesh/rpc/serve.js";
import { createLogger, initTracing, spansRecorded } from "../../mesh/telemetry.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { clientFor } from "../support/servers.js";
import type { MeshClient } from "../../mesh/rpc/client.js";

initTracing("test"); // no exporter, and OTEL_EXPORTER_OTLP_ENDPOINT is not set in tests

interface Seen {
  active?: SpanContext;
  traceparent: string | null;
  tracestate: string | null;
}

let pki: TestPki;
let back: RunningServer;
let front: RunningServer;
let client: MeshClient<typeof IdentityService>;
let seen: Record<"front" | "back", Seen[]>;
const lines: Record<string, unknown>[] = [];

beforeAll(async () => {
  pki = await createTestPki();
  const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk))), done()) });
  const logger = createLogger("test", "debug", sink); // a read's "rpc" line is at debug (interceptors.ts)
  const start = async (identity: string, getJwks: (req: unknown, ctx: { requestHeader: Headers }) => unknown) =>
    serve({
      service: IdentityService,
      impl: { getJwks } as never,
      tls: await pki.tls(identity),
      logger,
      metrics: new Registry(),
      host: "127.0.0.1",
      port: 0,
    });
  const note = (where: "front" | "back", ctx: { requestHeader: Headers }) =>
    seen[where].push({ active: trace.getActiveSpan()?.spanContext(), traceparent: ctx.requestHeader.get("traceparent"), tracestate: ctx.requestHeader.get("tracestate") });
  back = await start("identity", (_req, ctx) => {
    note("back", ctx);
    logger.info("inside the back call");
    return { keys: [] };
  });
  const toBack = await clientFor(pki, IdentityService, "identity", [`127.0.0.1:${back.port}`], { as: "catalog" });
  front = await start("catalog", (_req, ctx) => {
    note("front", ctx);
    return toBack.getJwks({});
  });
  client = await clientFor(pki, IdentityService, "catalog", [`127.0.0.1:${front.port}`]);
});
afterAll(async () => {
  client.close();
  await Promise.all([front.drain(), back.drain()]);
});

/** One call through both hops, made in `parent`'s trace if given. */
async function twoHops(parent?: SpanContext) {
  seen = { front: [], back: [] };
  lines.length = 0;
  const ctx = parent ? trace.setSpan(ROOT_CONTEXT, trace.wrapSpanContext(parent)) : ROOT_CONTEXT;
  await context.with(ctx, () => client.getJwks({}));
  expect(seen.front).toHaveLength(1);
  expect(seen.back).toHaveLength(1);
  return { front: seen.front[0]!, back: seen.back[0]! };
}

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-00$/;

describe("trace context with no exporter", () => {
  it("records no span", () => {
    expect(spansRecorded()).toBe(false);
  });

  it("continues the caller's trace across two hops, a span id per hop, and logs carry them", async () => {
    const parent = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: TraceFlags.SAMPLED, isRemote: true };
    const { front, back } = await twoHops(parent);
    // The client's span (its id is in the header) is the server span's parent; no id repeats.
    const [, frontTrace, frontParent] = TRACEPARENT.exec(front.traceparent ?? "") ?? [];
    const [, backTrace, backParent] = TRACEPARENT.exec(back.traceparent ?? "") ?? [];
    expect([frontTrace, backTrace, front.active?.traceId, back.active?.traceId]).toEqual(Array(4).fill(parent.traceId));
    const spanIds = [parent.spanId, frontParent, front.active?.spanId, backParent, back.active?.spanId];
    expect(new Set(spanIds).size).toBe(5);
    for (const id of spanIds) expect(id).toMatch(/^(?!0{16})[0-9a-f]{16}$/);
    // Not recorded here, so not sampled from here on.
    expect(front.active?.traceFlags).toBe(TraceFlags.NONE);

    // The handler's own line and the call's "rpc" line, both with the back hop's ids.
    const inside = lines.find((l) => l.msg === "inside the back call");
    expect(inside).toMatchObject({ trace_id: parent.traceId, span_id: back.active?.spanId });
    const rpc = lines.filter((l) => l.msg === "rpc");
    expect(rpc).toHaveLength(2);
    expect(new Set(rpc.map((l) => l.trace_id))).toEqual(new Set([parent.traceId]));
    expect(new Set(rpc.map((l) => l.span_id))).toEqual(new Set([front.active?.spanId, back.active?.spanId]));
  });

  it("starts a trace for a call that has none, or whose traceparent does not parse", async () => {
    const { front, back } = await twoHops();
    expect(front.active?.traceId).toMatch(/^(?!0{32})[0-9a-f]{32}$/);
    expect(back.active?.traceId).toBe(front.active?.traceId);
    const again = await twoHops();
    expect(again.front.active?.traceId).not.toBe(front.active?.traceId);

    const invalid = await twoHops({ traceId: "0".repeat(32), spanId: "00f067aa0ba902b7", traceFlags: TraceFlags.SAMPLED });
    expect(invalid.front.active?.traceId).toMatch(/^(?!0{32})[0-9a-f]{32}$/);
  });

  it("passes the caller's tracestate on", async () => {
    const parent = { traceId: "4bf92f3577b34da6a3ce929d0e0e4736", spanId: "00f067aa0ba902b7", traceFlags: TraceFlags.NONE, traceState: createTraceState("shop=1,vendor=abc") };
    const { front, back } = await twoHops(parent);
    expect(front.tracestate).toBe("shop=1,vendor=abc");
    expect(back.tracestate).toBe("shop=1,vendor=abc");
    expect(back.active?.traceState?.get("vendor")).toBe("abc");
  });
});
