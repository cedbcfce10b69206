// Notification's consumers are idempotent by themselves (applyIdempotent): no inbox and no
// transaction, one INSERT … ON CONFLICT per batch on the event's id. Against the service as
// main() starts it, on its own real nats-server: an event delivered twice, and a batch holding
// both copies, still make one notification, and the inbox holds nothing for them.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { headers as natsHeaders } from "nats";
import { v7 as uuidv7 } from "uuid";
import { OrderConfirmedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { NotificationService } from "../../gen/shop/notification/v1/notification_pb.js";
import { encodeEvent, ensureStreams, type EncodedEvent } from "../../mesh/events/events.js";
import { topology } from "../../mesh/topology.js";
import { notification } from "../../services/notification/notification.js";
import { eventually } from "../support/eventually.js";
import { startWithNats, type ServiceWithNats } from "../support/service.js";

let svc: ServiceWithNats<typeof NotificationService>;
beforeAll(async () => {
  svc = await startWithNats(notification);
  await ensureStreams(svc.jsm, "order", topology.order.eventSubjects, { deadLetters: false });
}, 60_000);
afterAll(() => svc?.stop());

/** Publishes `event` as a new JetStream message each time (its own message id), so JetStream keeps every copy: a redelivery as consumers see one. */
async function deliver(event: EncodedEvent) {
  const h = natsHeaders();
  for (const [key, value] of Object.entries(event.headers)) h.set(key, value);
  await svc.js.publish(event.subject, event.payload, { msgID: uuidv7(), headers: h });
}

const rowsFor = async (eventId: string) => (await svc.svc.db.query<{ n: number }>("SELECT count(*)::int AS n FROM notifications WHERE source_event_id = $1", [eventId]))[0]!.n;

describe("notification, once per event", () => {
  it("makes one notification of an event delivered three times, two of them in one batch, and records no inbox entry", async () => {
    const userId = uuidv7();
    const confirmed = encodeEvent(OrderConfirmedSchema, { orderId: uuidv7(), userId, total: { currencyCode: "EUR", amountMinor: 1999n } }, { source: "order" });
    await Promise.all([deliver(confirmed), deliver(confirmed)]);
    await eventually(() => rowsFor(confirmed.id), (n) => n === 1, 15_000);
    // A later copy too, once the first ones are handled; and an event after it, to know the copy was seen.
    await deliver(confirmed);
    const next = encodeEvent(OrderConfirmedSchema, { orderId: uuidv7(), userId, total: { currencyCode: "EUR", amountMinor: 500n } }, { source: "order" });
    await deliver(next);
    await eventually(() => rowsFor(next.id), (n) => n === 1, 15_000);
    const info = await svc.jsm.consumers.info("SHOP_ORDER", "notification-order-confirmed");
    expect(info.num_ack_pending + info.num_pending).toBe(0); // every copy was handled and acknowledged
    expect(await rowsFor(confirmed.id)).toBe(1);
    const inbox = await svc.svc.db.query<{ n: number }>("SELECT count(*)::int AS n FROM inbox WHERE event_id = ANY($1)", [[confirmed.id, next.id]]);
    expect(inbox[0]!.n).toBe(0);
  });
});
