// Typed events over a real nats-server with JetStream: headers, dedupe, retries, dead letters.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DiscardPolicy, headers as natsHeaders, type JetStreamClient, type JetStreamManager, type NatsConnection } from "nats";
import { UserRegisteredSchema } from "../../gen/shop/identity/v1/events_pb.js";
import { OrderCreatedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { listDeadLetters, replayDeadLetters } from "../../mesh/events/dead-letters.js";
import { consume, DLQ_STREAM, ensureStreams, eventSubject, publishEvent, streamName, type Delivered } from "../../mesh/events/events.js";
import { startNats, type NatsTestServer } from "../support/processes.js";
import { eventually } from "../support/eventually.js";
import { silentLogger, sleep } from "../support/servers.js";

let nats: NatsTestServer;
let nc: NatsConnection;
let js: JetStreamClient;
let jsm: JetStreamManager;

beforeAll(async () => {
  nats = await startNats();
  nc = await nats.connect();
  js = nc.jetstream();
  jsm = await nc.jetstreamManager();
  await ensureStreams(jsm, "identity", ["shop.user.>"]);
  await ensureStreams(jsm, "order", ["shop.order.>"]);
});
afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

const until = (check: () => boolean) => eventually(check, Boolean);

/** A consumer whose handler takes one event at a time (the batch handled in turn). */
const consumeEach = <S extends Parameters<typeof consume>[2]["event"]>(
  opts: Omit<Parameters<typeof consume<S>>[2], "handler"> & { handler: (event: Delivered<S>) => Promise<void> },
) => consume(js, jsm, { ...opts, handler: async (events) => { for (const event of events) await opts.handler(event); } });

describe("events", () => {
  it("names subjects shop.<entity>.<event>", () => {
    expect(eventSubject(UserRegisteredSchema)).toBe("shop.user.registered");
    expect(eventSubject(OrderCreatedSchema)).toBe("shop.order.created");
  });

  it("delivers a typed event with CloudEvents headers, and drops a duplicate publish", async () => {
    const seen: Delivered<typeof UserRegisteredSchema>[] = [];
    const consumer = await consumeEach({
      durable: "test-user-registered",
      stream: streamName("identity"),
      event: UserRegisteredSchema,
      logger: silentLogger,
      handler: async (event) => void seen.push(event),
    });
    const first = await publishEvent(js, UserRegisteredSchema, { userId: "u1", email: "a@b.co" }, { id: "evt-1", source: "identity" });
    const again = await publishEvent(js, UserRegisteredSchema, { userId: "u1", email: "a@b.co" }, { id: "evt-1", source: "identity" });
    expect([first.duplicate, again.duplicate]).toEqual([false, true]);
    await until(() => seen.length === 1);
    await sleep(200);
    expect(seen).toHaveLength(1);
    expect(seen[0]).toMatchObject({ id: "evt-1", type: "shop.identity.v1.UserRegistered", source: "identity", subject: "shop.user.registered", deliveryCount: 1 });
    expect(seen[0]!.data.email).toBe("a@b.co");

    const stored = await jsm.streams.getMessage(streamName("identity"), { seq: first.seq });
    expect(stored.header.get("ce-specversion")).toBe("1.0");
    expect(stored.header.get("Nats-Msg-Id")).toBe("evt-1");
    expect(stored.header.get("content-type")).toBe("application/protobuf");
    await consumer.stop();
  });

  it("retries a failing handler with a delay, then acknowledges", async () => {
    const deliveries: number[] = [];
    const consumer = await consumeEach({
      durable: "test-retry",
      stream: streamName("order"),
      event: OrderCreatedSchema,
      logger: silentLogger,
      backoffMs: [50],
      handler: async (event) => {
        deliveries.push(event.deliveryCount);
        if (event.deliveryCount < 3) throw new Error("not yet");
      },
    });
    await publishEvent(js, OrderCreatedSchema, { orderId: "o-retry" }, { source: "order" });
    await until(() => deliveries.length === 3);
    await sleep(300);
    expect(deliveries).toEqual([1, 2, 3]);
    const info = await jsm.consumers.info(streamName("order"), "test-retry");
    expect(info.num_ack_pending).toBe(0);
    await consumer.stop();
  });

  it("dead-letters a message after its last delivery, with its headers and the reason", async () => {
    let attempts = 0;
    const consumer = await consumeEach({
      durable: "test-poison",
      stream: streamName("order"),
      event: OrderCreatedSchema,
      logger: silentLogger,
      maxDeliver: 3,
      backoffMs: [20],
      handler: async (event) => {
        if (event.data.orderId === "o-poison") {
          attempts++;
          throw new Error("cannot handle this order");
        }
      },
    });
    const before = (await jsm.streams.info(DLQ_STREAM)).state.messages;
    await publishEvent(js, OrderCreatedSchema, { orderId: "o-poison" }, { id: "evt-poison", source: "order" });
    await until(() => attempts === 3);
    const dead = await eventually(async () => (await jsm.streams.info(DLQ_STREAM)).state.messages, (n) => n > before);
    expect(dead).toBe(before + 1);
    const letter = await jsm.streams.getMessage(DLQ_STREAM, { last_by_subj: "dlq.test-poison.shop.order.created" });
    expect(letter.header.get("ce-id")).toBe("evt-poison");
    expect(letter.header.get("ce-type")).toBe("shop.order.v1.OrderCreated");
    expect(letter.header.get("dlq-reason")).toMatch(/handler failed on delivery 3: cannot handle this order/);
    await sleep(300);
    expect(attempts).toBe(3); // not delivered again
    await consumer.stop();
  });

  it("dead-letters an undecodable event once: it leaves the consumer and is not delivered again", async () => {
    // nats-server 2.9 ignores a reason given with +TERM: the message stayed pending, came back after
    // every ack wait, and went to the dead letters (and the terminal) again each time.
    const consumer = await consumeEach({
      durable: "test-undecodable",
      stream: streamName("order"),
      event: OrderCreatedSchema,
      logger: silentLogger,
      ackWaitMs: 300,
      handler: async () => {},
    });
    const h = natsHeaders();
    h.set("ce-type", "shop.order.v1.OrderCreated");
    h.set("ce-id", "evt-garbage");
    await js.publish("shop.order.created", new Uint8Array([0xff, 0xff, 0xff]), { headers: h });
    const letter = await eventually(
      () => jsm.streams.getMessage(DLQ_STREAM, { last_by_subj: "dlq.test-undecodable.shop.order.created" }).catch(() => undefined),
      Boolean,
    );
    expect(letter!.header.get("dlq-reason")).toMatch(/payload does not decode/);
    const info = await eventually(() => jsm.consumers.info(streamName("order"), "test-undecodable"), (i) => i.num_ack_pending === 0 && i.num_pending === 0);
    expect(info.num_redelivered).toBe(0);
    await consumer.stop();
  });

  it("keeps events for a bounded time and size: 7 days in a service's stream, 30 in the dead letters, or as configured", async () => {
    const hours = (ns: number) => ns / 3_600e9;
    const [events, deadLetters] = await Promise.all([jsm.streams.info(streamName("order")), jsm.streams.info(DLQ_STREAM)]);
    expect(hours(events.config.max_age)).toBe(7 * 24);
    expect(hours(deadLetters.config.max_age)).toBe(30 * 24);
    for (const { config } of [events, deadLetters]) {
      expect(config.max_bytes).toBe(1024 ** 3);
      expect(config.discard).toBe(DiscardPolicy.New); // a full stream refuses new events (they wait in the outbox) rather than dropping unread ones
    }
    const limits = { events: { maxAgeMs: 48 * 3_600_000, maxBytes: 64 * 1024 ** 2 }, deadLetters: { maxAgeMs: 96 * 3_600_000, maxBytes: 32 * 1024 ** 2 } };
    await ensureStreams(jsm, "order", ["shop.order.>"], { limits });
    const [updated, updatedDlq] = await Promise.all([jsm.streams.info(streamName("order")), jsm.streams.info(DLQ_STREAM)]);
    expect([hours(updated.config.max_age), updated.config.max_bytes]).toEqual([48, 64 * 1024 ** 2]);
    expect([hours(updatedDlq.config.max_age), updatedDlq.config.max_bytes]).toEqual([96, 32 * 1024 ** 2]);
    await ensureStreams(jsm, "order", ["shop.order.>"]); // back to the defaults for the other tests
  });

  it("lists dead letters and replays a chosen one once the handler is fixed", async () => {
    let fixed = false;
    const handled: string[] = [];
    const consumer = await consumeEach({
      durable: "test-replay",
      stream: streamName("order"),
      event: OrderCreatedSchema,
      logger: silentLogger,
      maxDeliver: 2,
      backoffMs: [20],
      handler: async (event) => {
        if (event.data.orderId !== "o-replay") return;
        if (!fixed) throw new Error("bug");
        handled.push(event.id);
      },
    });
    await publishEvent(js, OrderCreatedSchema, { orderId: "o-replay" }, { id: "evt-replay", source: "order" });
    const letter = await eventually(
      async () => (await listDeadLetters(jsm)).find((l) => l.eventId === "evt-replay"),
      (l) => l !== undefined,
    );
    expect(letter).toMatchObject({ consumer: "test-replay", subject: "shop.order.created", type: "shop.order.v1.OrderCreated", deliveries: 2 });
    expect(letter!.reason).toMatch(/bug/);

    fixed = true;
    expect(await replayDeadLetters(js, jsm, [letter!.seq])).toBe(1);
    await until(() => handled.length === 1);
    expect(handled).toEqual(["evt-replay"]); // the same event, by its ce-id
    expect((await listDeadLetters(jsm)).some((l) => l.eventId === "evt-replay")).toBe(false);
    await consumer.stop();
  });

  it("does not redeliver a message while its handler is still working past the ack wait (heartbeats)", async () => {
    let deliveries = 0;
    let finished = false;
    const consumer = await consumeEach({
      durable: "test-slow-handler", stream: streamName("order"), event: OrderCreatedSchema, logger: silentLogger, ackWaitMs: 1_000,
      handler: async ({ data }) => {
        if (data.orderId !== "o-slow") return; // the stream also holds other tests' events
        deliveries++;
        await sleep(3_500); // three and a half ack waits
        finished = true;
      },
    });
    await publishEvent(js, OrderCreatedSchema, { orderId: "o-slow" }, { source: "order" });
    await eventually(() => finished, Boolean, 15_000);
    await eventually(async () => (await jsm.consumers.info(streamName("order"), "test-slow-handler")).num_ack_pending, (n) => n === 0);
    await sleep(1_500); // past another ack wait: a redelivery would show now
    expect(deliveries).toBe(1);
    expect((await jsm.consumers.info(streamName("order"), "test-slow-handler")).num_redelivered).toBe(0);
    await consumer.stop();
  });

  it("hands what arrived together to the handler as one batch, and holds up no event behind a failing one", async () => {
    const batches: string[][] = [];
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const attempts = new Map<string, number>();
    const consumer = await consume(js, jsm, {
      durable: "test-batches", stream: streamName("order"), event: OrderCreatedSchema, logger: silentLogger, backoffMs: [20], maxDeliver: 2,
      handler: async (events) => {
        const ids = events.map((e) => e.data.orderId).filter((id) => id.startsWith("o-batch"));
        if (!ids.length) return; // the stream also holds other tests' events
        batches.push(ids);
        for (const id of ids) attempts.set(id, (attempts.get(id) ?? 0) + 1);
        if (ids[0] === "o-batch-0") await gate; // the first holds the consumer while the rest arrive
        if (ids.includes("o-batch-bad")) throw new Error("cannot handle o-batch-bad");
      },
    });
    await publishEvent(js, OrderCreatedSchema, { orderId: "o-batch-0" }, { source: "order" });
    await until(() => batches.length === 1);
    for (let i = 1; i <= 5; i++) await publishEvent(js, OrderCreatedSchema, { orderId: i === 3 ? "o-batch-bad" : `o-batch-${i}` }, { source: "order" });
    const pending = await eventually(async () => (await jsm.consumers.info(streamName("order"), "test-batches")).num_ack_pending, (n) => n >= 6);
    // JetStream counts a message as pending when it sends it, which can be before it reaches us.
    await until(() => consumer.held() >= pending);
    release();
    await eventually(async () => (await jsm.consumers.info(streamName("order"), "test-batches")).num_ack_pending, (n) => n === 0);
    // The five that waited came as one batch; it failed, so each was handled again on its own:
    // the good ones were acknowledged, the bad one retried and dead-lettered.
    expect(batches[1]).toEqual(["o-batch-1", "o-batch-2", "o-batch-bad", "o-batch-4", "o-batch-5"]);
    expect(batches.slice(2, 7)).toEqual([["o-batch-1"], ["o-batch-2"], ["o-batch-bad"], ["o-batch-4"], ["o-batch-5"]]);
    expect(Object.fromEntries(attempts)).toEqual({ "o-batch-0": 1, "o-batch-1": 2, "o-batch-2": 2, "o-batch-bad": 3, "o-batch-4": 2, "o-batch-5": 2 });
    const letter = await jsm.streams.getMessage(DLQ_STREAM, { last_by_subj: "dlq.test-batches.shop.order.created" });
    expect(letter.header.get("dlq-reason")).toMatch(/cannot handle o-batch-bad/);
    await consumer.stop();
  });
});
