// What NATS lets the gateway do, from the topology: subscribe to the events that invalidate its
// cache, and nothing else: no other subject, no publishing. Real nats-server with the generated
// configuration, the gateway's real certificate.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { NatsConnection, Status } from "nats";
import { gateway } from "../../mesh/topology.js";
import { eventually } from "../support/eventually.js";
import { startNats, type NatsTestServer } from "../support/processes.js";

let nats: NatsTestServer;
let nc: NatsConnection;
const errors: Status[] = [];

beforeAll(async () => {
  nats = await startNats();
  nc = await nats.connect({ as: "gateway" });
  void (async () => {
    for await (const s of nc.status()) if (s.type === "error") errors.push(s);
  })();
}, 30_000);
afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

/** Whether the server keeps a subscription to `subject` (a refused one is closed before the flush returns). */
async function subscribes(subject: string): Promise<boolean> {
  const sub = nc.subscribe(subject, { callback: () => {} });
  await nc.flush();
  return !sub.isClosed();
}

describe("the gateway on NATS", () => {
  it("may subscribe to the events that invalidate its cache, and to nothing else", async () => {
    expect(gateway.cacheInvalidatedBy).toEqual(["shop.product.updated"]);
    for (const subject of gateway.cacheInvalidatedBy) expect(await subscribes(subject)).toBe(true);
    for (const subject of ["shop.order.created", "shop.product.>", ">", "_INBOX.x"]) expect(await subscribes(subject), subject).toBe(false);
  });

  it("may publish nothing", async () => {
    const before = errors.length;
    nc.publish("shop.product.updated", new Uint8Array([1]));
    // The server refuses it asynchronously (-ERR 'Permissions Violation for Publish …').
    const refused = await eventually(() => errors.slice(before).map((e) => String(e.data)), (seen) => seen.length > 0);
    expect(refused).toEqual([expect.stringMatching(/permission/i)]);
  });
});
