// The edge continues a caller's W3C trace into the services, and starts a trace for a caller who
// sends none, also when nothing records spans (then the edge makes its span's ids without the
// tracing SDK: server.ts). Real gateway over HTTP; the inventory behind it is a real mTLS gRPC
// server that keeps the traceparent each call brings.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InventoryService } from "../../gen/shop/inventory/v1/inventory_pb.js";
import { spansRecorded } from "../../mesh/telemetry.js";
import { startLoneGateway, type LoneGateway } from "../support/lone-gateway.js";
import { createTestPki } from "../support/pki.js";
import { startServer, type StubServer } from "../support/servers.js";

let inventory: StubServer;
let lone: LoneGateway;
/** The traceparent of each GetStock call, by product id. */
const seen = new Map<string, string | null>();

beforeAll(async () => {
  inventory = await startServer(await createTestPki(), "inventory", InventoryService, {
    getStock: (req, ctx) => {
      seen.set(req.productId, ctx.requestHeader.get("traceparent"));
      return { stock: { productId: req.productId, available: 1 } };
    },
  });
  lone = await startLoneGateway({ INVENTORY_ADDRESSES: inventory.address });
}, 60_000);
afterAll(async () => {
  await lone?.stop();
  await inventory?.drain();
});

const productId = (n: number) => `0190a000-0000-7000-8000-00000000001${n}`;
const traceparent = /^00-([0-9a-f]{32})-([0-9a-f]{16})-0[01]$/;

async function upstreamTraceparent(id: string, headers: Record<string, string> = {}): Promise<RegExpExecArray> {
  const res = await fetch(`http://127.0.0.1:${lone.gateway.port}/v1/stock/${id}`, { headers });
  expect(res.status).toBe(200);
  const sent = traceparent.exec(seen.get(id) ?? "");
  expect(sent).not.toBeNull();
  return sent!;
}

describe("edge: trace context, with no span recorded", () => {
  it("records no spans in this process (the path under test)", () => {
    expect(spansRecorded()).toBe(false);
  });

  it("continues the caller's trace, under a span of its own", async () => {
    const [traceId, spanId] = [randomBytes(16).toString("hex"), randomBytes(8).toString("hex")];
    const [, upstreamTrace, upstreamParent] = await upstreamTraceparent(productId(1), { traceparent: `00-${traceId}-${spanId}-01` });
    expect(upstreamTrace).toBe(traceId);
    expect(upstreamParent).not.toBe(spanId);
  });

  it("starts a new trace for each caller that sends none, or an invalid one", async () => {
    const [, first] = await upstreamTraceparent(productId(2));
    const [, second] = await upstreamTraceparent(productId(3), { traceparent: "00-not-a-trace-01" });
    expect(first).not.toBe(second);
    expect(first).not.toMatch(/^0+$/);
  });
});
