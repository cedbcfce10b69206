// Typed events over NATS JetStream.
//
// An event is a protobuf message of the contracts (an events.proto message). On the wire it is the
// CloudEvents NATS binding: the protobuf bytes as payload, and headers ce-specversion, ce-id,
// ce-type (the message's full name), ce-source, ce-time, plus traceparent. Nats-Msg-Id = ce-id, so
// JetStream drops a duplicate publish inside the stream's duplicate window.
//
// Subjects: shop.<entity>.<event>, from the message name: OrderCreated → shop.order.created,
// StockReserved → shop.stock.reserved. Each owning service has a stream SHOP_<SERVICE> over its
// subjects (topology.eventSubjects); dead letters go to SHOP_DLQ under dlq.<consumer>.<subject>.
// Streams keep events for a bounded time and size (StreamLimits): nothing sits there forever.
//
// Consumers are durable pull consumers with explicit ack, handing events over in batches (what
// arrived together). A failed handler is retried with growing delays; after its last delivery the
// message goes to the dead-letter stream with its original headers and the reason, and is
// terminated on the source stream. A message held by a process that died comes back after the ack
// wait (5 s); messages this process holds get heartbeats, so slow work is not redelivered under
// its own feet.
import { create, fromBinary, toBinary, type DescMessage, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { context, propagation, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, type Context, type Span } from "@opentelemetry/api";
import {
  AckPolicy, DeliverPolicy, DiscardPolicy, headers as natsHeaders, nanos, StorageType,
  type JetStreamClient, type JetStreamManager, type JsMsg, type MsgHdrs, type PubAck,
} from "nats";
import { v7 as uuidv7 } from "uuid";
import type { Logger } from "../telemetry.js";

export const DLQ_STREAM = "SHOP_DLQ";
const DUPLICATE_WINDOW_MS = 2 * 60_000;

/** shop.<entity>.<event> from a message name: OrderCreated → shop.order.created. */
export function eventSubject(schema: DescMessage): string {
  const words = schema.name.split(/(?=[A-Z])/).map((w) => w.toLowerCase());
  if (words.length < 2) throw new Error(`${schema.typeName}: an event name is <Entity><Event>, e.g. OrderCreated`);
  return `shop.${words[0]}.${words.slice(1).join("_")}`;
}

export const streamName = (service: string) => `SHOP_${service.toUpperCase()}`;

/** How long, and how much, a stream keeps. */
export interface StreamLimit {
  maxAgeMs: number;
  maxBytes: number;
}

export interface StreamLimits {
  /** A service's event stream: long enough for any consumer outage worth waiting out. */
  events: StreamLimit;
  /** The dead-letter stream: long enough for someone to look, fix and replay. */
  deadLetters: StreamLimit;
}

const HOUR_MS = 3_600_000;
export const defaultStreamLimits: StreamLimits = {
  events: { maxAgeMs: 7 * 24 * HOUR_MS, maxBytes: 1024 ** 3 },
  deadLetters: { maxAgeMs: 30 * 24 * HOUR_MS, maxBytes: 1024 ** 3 },
};

export interface EnsureStreamsOptions {
  /** Also the shared dead-letter stream (default true; services that consume need it). */
  deadLetters?: boolean;
  limits?: StreamLimits;
  /** Copies NATS keeps of each stream: 1 on one server, 3 on a three-node cluster (deploy/k8s). */
  replicas?: number;
}

/**
 * Creates or updates a service's event stream (file storage, duplicate window, limits) and the
 * dead-letter stream. A full stream refuses new messages rather than dropping unconsumed ones:
 * events then wait in their outbox, dead letters come back to their consumer.
 */
export async function ensureStreams(jsm: JetStreamManager, service: string, subjects: readonly string[], opts: EnsureStreamsOptions = {}): Promise<void> {
  const { deadLetters = true, limits = defaultStreamLimits, replicas = 1 } = opts;
  const streams: { name: string; subjects: string[]; limit: StreamLimit }[] = [];
  if (deadLetters) streams.push({ name: DLQ_STREAM, subjects: ["dlq.>"], limit: limits.deadLetters });
  if (subjects.length) streams.push({ name: streamName(service), subjects: [...subjects], limit: limits.events });
  for (const { name, subjects, limit } of streams) {
    const config = {
      name, subjects, storage: StorageType.File, duplicate_window: nanos(DUPLICATE_WINDOW_MS),
      max_age: nanos(limit.maxAgeMs), max_bytes: limit.maxBytes, discard: DiscardPolicy.New, num_replicas: replicas,
    };
    try {
      await jsm.streams.info(name);
      await jsm.streams.update(name, config);
    } catch (err) {
      if (!/stream not found/i.test((err as Error).message)) throw err;
      await jsm.streams.add(config);
    }
  }
}

export interface EventMeta {
  /** ce-id; also the Nats-Msg-Id. New UUIDv7 when not given. */
  id?: string;
  /** ce-source: the producing service, e.g. "order". */
  source: string;
  time?: Date;
  /**
   * The delivered event this one follows from, whose trace it continues. Needed where a batch's
   * events are handled together (applyAll, thenAll); otherwise the active trace context is used.
   */
  cause?: { context: Context };
}

/** An event ready to publish (or to keep in an outbox row until it is). */
export interface EncodedEvent {
  id: string;
  subject: string;
  type: string;
  payload: Uint8Array;
  headers: Record<string, string>;
}

export function encodeEvent<S extends DescMessage>(schema: S, data: MessageInitShape<S>, meta: EventMeta): EncodedEvent {
  const id = meta.id ?? uuidv7();
  const headers: Record<string, string> = {
    "ce-specversion": "1.0",
    "ce-id": id,
    "ce-type": schema.typeName,
    "ce-source": meta.source,
    "ce-time": (meta.time ?? new Date()).toISOString(),
    "content-type": "application/protobuf",
  };
  propagation.inject(meta.cause?.context ?? context.active(), headers);
  return { id, subject: eventSubject(schema), type: schema.typeName, payload: toBinary(schema, create(schema, data)), headers };
}

/** Publishes an encoded event; JetStream acknowledges (or reports a duplicate) before this resolves. */
export function publishEncoded(js: JetStreamClient, event: EncodedEvent, timeoutMs = 5_000): Promise<PubAck> {
  const h = natsHeaders();
  for (const [key, value] of Object.entries(event.headers)) h.set(key, value);
  return js.publish(event.subject, event.payload, { msgID: event.id, headers: h, timeout: timeoutMs });
}

export const publishEvent = <S extends DescMessage>(js: JetStreamClient, schema: S, data: MessageInitShape<S>, meta: EventMeta) =>
  publishEncoded(js, encodeEvent(schema, data, meta));

/** A delivered event, decoded. */
export interface Delivered<S extends DescMessage = DescMessage> {
  id: string;
  type: string;
  source: string;
  time: Date;
  subject: string;
  data: MessageShape<S>;
  /** 1 on first delivery. */
  deliveryCount: number;
  /** The trace context of this event's handling (its consumer span): run its work inside it. */
  context: Context;
}

export interface ConsumerOptions<S extends DescMessage> {
  /** Durable consumer name, e.g. "inventory-order-created" (a consumer group: replicas share it). */
  durable: string;
  /** The stream that holds the events (streamName(owner)). */
  stream: string;
  /**
   * The event type this consumer handles; its subject is the consumer's filter. One type per
   * consumer keeps to what nats-server 2.9 (Debian's) supports: a single filter subject.
   */
  event: S;
  /**
   * Handles the events that arrived together, at least once each. Resolving acknowledges them
   * all; throwing has each handled again on its own, so one bad event holds up no other.
   */
  handler: (events: Delivered<S>[]) => Promise<void>;
  logger: Logger;
  /** Deliveries before a message is dead-lettered. */
  maxDeliver?: number;
  /**
   * How long a delivery may go without an ack or a heartbeat before JetStream sends it again: the
   * delay before a message held by a process that died is redelivered. Messages this process
   * holds get heartbeats (msg.working()), so handling may take longer than this.
   */
  ackWaitMs?: number;
  /** Delay before the n-th retry (the last one repeats). */
  backoffMs?: readonly number[];
}

export interface RunningConsumer {
  stop(): Promise<void>;
  /** Messages this process holds, queued or being handled: what JetStream counts as ack-pending once they have arrived. */
  held(): number;
}

const header = (h: MsgHdrs | undefined, key: string) => h?.get(key) || undefined;

export const DEFAULT_ACK_WAIT_MS = 5_000;
/**
 * The most events handed to the handler at once. Under load events queue up while a batch is
 * handled, and the next batch takes them all: one transaction for many events instead of one each.
 */
const MAX_BATCH = 32;
/** Messages pulled ahead of the handler: what JetStream sends before we ask again. */
const PULL_BATCH = 2 * MAX_BATCH;
/**
 * Lifetime of one pull request; idle heartbeats come every half of it. It also paces how soon the
 * client notices a lost pull and, after NATS restarts, retries finding its consumer (nats.js waits
 * 0.5–1.5 × this between tries; the default 30 s made consumers resume 15–45 s late).
 */
const PULL_EXPIRES_MS = 2_000;

/** Starts a durable pull consumer and hands its events to `handler` in batches, each event at least once. */
export async function consume<S extends DescMessage>(js: JetStreamClient, jsm: JetStreamManager, opts: ConsumerOptions<S>): Promise<RunningConsumer> {
  const maxDeliver = opts.maxDeliver ?? 5;
  const backoff = opts.backoffMs ?? [100, 500, 2_000, 5_000];
  const ackWait = opts.ackWaitMs ?? DEFAULT_ACK_WAIT_MS;
  const schema = opts.event;
  const subject = eventSubject(schema);
  const config = {
    durable_name: opts.durable,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(ackWait),
    // Unbounded on the server: we count deliveries ourselves and dead-letter after maxDeliver, so
    // a process that dies during the last attempt, or a dead-letter publish that fails, leads to
    // another delivery (which dead-letters) rather than to JetStream silently giving up.
    max_deliver: -1,
    filter_subject: subject,
  };
  try {
    await jsm.consumers.info(opts.stream, opts.durable);
    await jsm.consumers.update(opts.stream, opts.durable, config);
  } catch (err) {
    if (!/consumer not found/i.test((err as Error).message)) throw err;
    await jsm.consumers.add(opts.stream, config);
  }
  const consumer = await js.consumers.get(opts.stream, opts.durable);
  const messages = await consumer.consume({ max_messages: PULL_BATCH, expires: PULL_EXPIRES_MS });
  const tracer = trace.getTracer("shopmesh");

  const deadLetter = async (msg: JsMsg, reason: string) => {
    const h = natsHeaders();
    for (const [key, values] of msg.headers ?? []) for (const value of values) if (key !== "Nats-Msg-Id") h.append(key, value);
    h.set("dlq-reason", reason.slice(0, 1_000));
    h.set("dlq-consumer", opts.durable);
    h.set("dlq-subject", msg.subject);
    h.set("dlq-stream-seq", String(msg.seq));
    h.set("dlq-deliveries", String(msg.info.deliveryCount));
    try {
      await js.publish(`dlq.${opts.durable}.${msg.subject}`, msg.data, { headers: h, msgID: `${opts.stream}:${msg.seq}:${opts.durable}` });
    } catch (err) {
      opts.logger.error({ err, consumer: opts.durable }, "cannot dead-letter now; the message will come back");
      msg.nak(backoff.at(-1));
      return;
    }
    // No reason with +TERM: nats-server 2.9 ignores a TERM that carries one and redelivers the
    // message. The reason travels in the dead letter's dlq-reason header instead.
    msg.term();
    opts.logger.error({ consumer: opts.durable, subject: msg.subject, event_id: header(msg.headers, "ce-id"), reason }, "event dead-lettered");
  };

  /** A message decoded into an event with its consumer span, or dead-lettered (undefined). */
  const decode = async (msg: JsMsg): Promise<{ msg: JsMsg; event: Delivered<S>; span: Span } | undefined> => {
    const count = msg.info.deliveryCount;
    if (count > maxDeliver) return void (await deadLetter(msg, `not acknowledged after ${maxDeliver} deliveries (handler crashed or timed out)`));
    const type = header(msg.headers, "ce-type");
    const id = header(msg.headers, "ce-id");
    if (type !== schema.typeName || !id) {
      return void (await deadLetter(msg, `not a ${schema.typeName} event (ce-type ${type ?? "missing"}, ce-id ${id ?? "missing"})`));
    }
    let data: MessageShape<S>;
    try {
      data = fromBinary(schema, msg.data);
    } catch (err) {
      return void (await deadLetter(msg, `payload does not decode as ${schema.typeName}: ${(err as Error).message}`));
    }
    const parent = propagation.extract(ROOT_CONTEXT, msg.headers, {
      get: (h, key) => h?.get(key) || undefined,
      keys: (h) => h?.keys() ?? [],
    });
    const span = tracer.startSpan(`consume ${msg.subject}`, { kind: SpanKind.CONSUMER, attributes: { "messaging.system": "nats", "messaging.destination.name": msg.subject, "messaging.message.id": id, "messaging.consumer.group.name": opts.durable } }, parent);
    const event: Delivered<S> = {
      id, type, data, subject: msg.subject, deliveryCount: count,
      source: header(msg.headers, "ce-source") ?? "",
      time: new Date(header(msg.headers, "ce-time") ?? Date.now()),
      context: trace.setSpan(parent, span),
    };
    return { msg, event, span };
  };

  /** After a failed attempt: again later with a growing delay, or to the dead letters after the last. */
  const failed = async ({ msg, event, span }: { msg: JsMsg; event: Delivered<S>; span: Span }, err: unknown) => {
    span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
    const count = event.deliveryCount;
    if (count >= maxDeliver) await deadLetter(msg, `handler failed on delivery ${count}: ${(err as Error).message}`);
    else {
      const delay = backoff[Math.min(count - 1, backoff.length - 1)]!;
      opts.logger.warn({ consumer: opts.durable, event_id: event.id, delivery: count, retry_in_ms: delay, err }, "event handler failed; will retry");
      msg.nak(delay);
    }
  };

  const handleBatch = async (msgs: JsMsg[]) => {
    const decoded = (await Promise.all(msgs.map(decode))).filter((d) => d !== undefined);
    if (!decoded.length) return;
    try {
      await opts.handler(decoded.map((d) => d.event));
      for (const d of decoded) d.msg.ack();
    } catch (err) {
      if (decoded.length === 1) await failed(decoded[0]!, err);
      else {
        for (const d of decoded) {
          try {
            await opts.handler([d.event]);
            d.msg.ack();
          } catch (err) {
            await failed(d, err);
          }
        }
      }
    } finally {
      for (const d of decoded) d.span.end();
    }
  };

  // One batch at a time: while it is handled, what arrives queues up and becomes the next batch.
  // Every message this process holds, queued or being handled, gets heartbeats, so JetStream
  // redelivers only what a dead process held.
  const queue: JsMsg[] = [];
  let handling: JsMsg[] = [];
  let arrived: (() => void) | undefined;
  let taken: (() => void) | undefined;
  let ended = false;
  const beat = () => {
    for (const msg of [...handling, ...queue]) {
      try {
        msg.working();
      } catch {} // the connection is closing: JetStream redelivers after the ack wait, as it should
    }
  };
  const heartbeats = setInterval(beat, ackWait / 3);
  const reader = (async () => {
    try {
      for await (const msg of messages) {
        queue.push(msg);
        arrived?.();
        while (queue.length >= PULL_BATCH) await new Promise<void>((resolve) => (taken = resolve));
      }
    } finally {
      ended = true;
      arrived?.();
    }
  })();
  const worker = (async () => {
    for (;;) {
      if (!queue.length) {
        if (ended) return;
        await new Promise<void>((resolve) => (arrived = resolve));
        arrived = undefined;
        continue;
      }
      handling = queue.splice(0, MAX_BATCH);
      taken?.();
      await handleBatch(handling).catch((err) => opts.logger.error({ err, consumer: opts.durable }, "events not handled; JetStream will redeliver"));
      handling = [];
    }
  })();

  return {
    held: () => handling.length + queue.length,
    async stop() {
      await messages.close();
      await reader;
      await worker;
      clearInterval(heartbeats);
    },
  };
}
