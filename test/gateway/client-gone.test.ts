// A client that leaves before its answer is complete cancels the call it started: the edge aborts
// the upstream call, so a service stops working for nobody. (Only then: a finished answer aborts
// nothing.) Real gateway over HTTP; the inventory behind it is a real mTLS gRPC server whose
// GetStock never answers and tells when its call is cancelled.
import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InventoryService } from "../../gen/shop/inventory/v1/inventory_pb.js";
import { startLoneGateway, type LoneGateway } from "../support/lone-gateway.js";
import { createTestPki } from "../support/pki.js";
import { startServer, type StubServer } from "../support/servers.js";

let inventory: StubServer;
let lone: LoneGateway;
/** A promise and what settles it (Node 20 has no Promise.withResolvers). */
const signal = () => {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
};
/** Per product id: resolves when its GetStock arrives, and when it is cancelled. */
const calls = new Map<string, { arrived: ReturnType<typeof signal>; cancelled: ReturnType<typeof signal> }>();
const callFor = (id: string) => {
  if (!calls.has(id)) calls.set(id, { arrived: signal(), cancelled: signal() });
  return calls.get(id)!;
};

beforeAll(async () => {
  inventory = await startServer(await createTestPki(), "inventory", InventoryService, {
    getStock: (req, ctx) =>
      new Promise((_, reject) => {
        callFor(req.productId).arrived.resolve();
        ctx.signal.addEventListener("abort", () => (callFor(req.productId).cancelled.resolve(), reject(ctx.signal.reason)));
      }),
  }, { drainTimeoutMs: 100 });
  lone = await startLoneGateway({ INVENTORY_ADDRESSES: inventory.address, UPSTREAM_TIMEOUT_MS: "600000" });
}, 60_000);
afterAll(async () => {
  await lone?.stop();
  await inventory?.drain();
});

const productId = (n: number) => `0190a000-0000-7000-8000-00000000000${n}`;

describe("edge: a client that leaves", () => {
  it("cancels its REST call upstream", async () => {
    const id = productId(1);
    const req = request({ host: "127.0.0.1", port: lone.gateway.port, path: `/v1/stock/${id}` });
    req.on("error", () => {}); // we hang up ourselves
    req.end();
    await callFor(id).arrived.promise;
    req.destroy();
    await callFor(id).cancelled.promise; // the test's own timeout bounds this wait
  });

  it("cancels its Connect call upstream", async () => {
    const id = productId(2);
    const abort = new AbortController();
    const answer = fetch(`http://127.0.0.1:${lone.gateway.port}/shop.inventory.v1.InventoryService/GetStock`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ productId: id }), signal: abort.signal,
    }).catch((err: Error) => err.name);
    await callFor(id).arrived.promise;
    abort.abort();
    expect(await answer).toBe("AbortError");
    await callFor(id).cancelled.promise;
  });
});
