// A service's side of the event backbone: its NATS connection, its stream, its outbox relay and
// its consumers. The connection is made in the background and kept up for the process's life: a
// service serves gRPC while NATS is away, its events wait in the outbox, and consumers resume
// where their durable consumer left off when NATS returns.
//
// The connection is always TLS with the service's own certificate (nats-server maps it to the
// service's NATS user, mesh/events/nats-config.ts); NATS_URL may say nats:// or tls://, both mean TLS here.
// Each service creates and updates only its own stream (and the shared dead-letter stream if it
// consumes); a consumer of another service's stream waits until that stream's owner has made it.
import type { DescMessage } from "@bufbuild/protobuf";
import { context } from "@opentelemetry/api";
import { connect, type NatsConnection } from "nats";
import type { TlsFiles } from "../certs.js";
import type { Db, Queryable, Tx } from "../data/db.js";
import { consume, ensureStreams, eventSubject, streamName, type Delivered, type RunningConsumer, type StreamLimits } from "./events.js";
import { durableName, natsConnectOptions } from "./nats-config.js";
import type { Registry } from "prom-client";
import { applyOnce, applyOnceAll } from "./inbox.js";
import { outboxBacklogGauge, startRelay, type Relay } from "./outbox.js";
import type { Logger } from "../telemetry.js";
import { ownerOfSubject, topology, type ServiceName } from "../topology.js";

/**
 * One event type a service reacts to. Events that arrive together are applied in one transaction,
 * each once (the inbox, under the consumer's name), and the events they enqueue are published
 * right after its commit.
 */
export interface EventHandlerSpec<S extends DescMessage = DescMessage> {
  event: S;
  /** Short name, unique within the service; the durable consumer is `<service>-<name>`, the inbox key `<name>`. */
  name: string;
  /** The event's effect on the service's database, inside a transaction other events of the batch share. */
  apply?: (q: Tx, event: Delivered<S>) => Promise<void>;
  /**
   * Instead of `apply`: the effect of all of a batch's new events at once, in `key` order, for
   * set-based SQL (a statement per batch instead of per event). Equivalent to applying them one
   * by one in that order.
   */
  applyAll?: (q: Tx, events: Delivered<S>[]) => Promise<void>;
  /**
   * Instead of `apply`/`applyAll`, for an effect idempotent by itself: one statement whose guard
   * makes a redelivery change nothing (UPDATE … WHERE status = 'reserved', INSERT … ON CONFLICT
   * DO NOTHING on the event's id). All of a batch's events at once, with no transaction and no
   * inbox around it: one statement per batch instead of four. It may enqueue no events.
   */
  applyIdempotent?: (q: Queryable, events: Delivered<S>[]) => Promise<void>;
  /**
   * What follows the commit (waking watchers, starting a charge). It runs for every delivery,
   * redeliveries too (a process may have died between the commit and this), so it is idempotent;
   * if it throws, the event comes again.
   */
  then?: (event: Delivered<S>) => Promise<void> | void;
  /** Instead of `then`: what follows the commit for all of a batch's events at once (idempotent, as `then`). */
  thenAll?: (events: Delivered<S>[]) => Promise<void>;
  /**
   * What the effect locks (e.g. the order id): a batch is applied in this key's order, so batches
   * of a service's consumers that touch the same rows take their locks in one order and cannot
   * deadlock each other. Unset: in the order the events arrived.
   */
  key?: (event: Delivered<S>) => string;
  maxDeliver?: number;
  backoffMs?: readonly number[];
}

/** The key of the saga's consumers: their effects lock what belongs to one order. */
export const byOrderId = (event: { data: { orderId: string } }) => event.data.orderId;

/** Typed helper so each spec's handler sees its own event type. */
export const on = <S extends DescMessage>(spec: EventHandlerSpec<S>) => spec as unknown as EventHandlerSpec;

/** A batch of one consumer's events: their effects in one transaction, then what follows each. */
function handlerOf(db: Db, spec: EventHandlerSpec): (events: Delivered[]) => Promise<void> {
  return async (events) => {
    const { apply, applyAll, applyIdempotent, then, thenAll, key } = spec;
    // Any one order will do, as long as every batch uses the same.
    const ordered = key ? [...events].sort((a, b) => key(a).localeCompare(key(b))) : events;
    if (applyIdempotent) await applyIdempotent(db, ordered);
    else if (applyAll) await applyOnceAll(db, spec.name, ordered, applyAll);
    else if (apply) await applyOnce(db, spec.name, ordered, (q, event) => context.with(event.context, () => apply(q, event)));
    if (thenAll) await thenAll(ordered);
    else if (then) await Promise.all(events.map((event) => context.with(event.context, () => then(event))));
  };
}

/** The service whose stream holds an event: the one whose topology eventSubjects match its subject. */
export function ownerOf(schema: DescMessage): ServiceName {
  const owner = ownerOfSubject(eventSubject(schema));
  if (!owner) throw new Error(`no service in mesh/topology.ts owns ${eventSubject(schema)} (${schema.typeName})`);
  return owner;
}

export interface Eventing {
  /** Resolves once connected, streams exist, the relay and every consumer run. */
  readonly ready: Promise<void>;
  stop(): Promise<void>;
}

export interface EventingOptions {
  service: ServiceName;
  url: string;
  /** The service's certificate: its identity on NATS. */
  tls: TlsFiles;
  db: Db;
  logger: Logger;
  /** The subjects this service owns (topology.eventSubjects). */
  subjects: readonly string[];
  handlers: readonly EventHandlerSpec[];
  /** Limits of the streams this service creates (its own, and the dead-letter stream). */
  streamLimits?: StreamLimits;
  /** Copies NATS keeps of the streams this service creates (EVENTS_REPLICAS). */
  streamReplicas?: number;
  /** The service's registry, for outbox_pending_events (also while NATS is away). */
  metrics?: Registry;
}

/** Every handler must be a consumer the topology lists: NATS permits exactly those. */
function checkAgainstTopology(service: ServiceName, handlers: readonly EventHandlerSpec[]): void {
  const listed = topology[service].consumes as Readonly<Record<string, string>>;
  for (const spec of handlers) {
    const subject = eventSubject(spec.event);
    if (listed[spec.name] !== subject) {
      throw new Error(`${service} consumes ${subject} as "${spec.name}", which mesh/topology.ts does not list (${service}.consumes): add it there, so NATS permits it`);
    }
  }
}

const RETRY_MS = [250, 500, 1_000, 2_000];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function startEventing(opts: EventingOptions): Eventing {
  checkAgainstTopology(opts.service, opts.handlers);
  if (opts.metrics) outboxBacklogGauge(opts.db, opts.metrics);
  let nc: NatsConnection | undefined;
  let relay: Relay | undefined;
  const consumers: RunningConsumer[] = [];
  let stopping = false;

  /** Stops whatever has been started so far; safe to call more than once. */
  const teardown = async () => {
    await Promise.all(consumers.splice(0).map((c) => c.stop()));
    await relay?.stop();
    relay = undefined;
    const connection = nc;
    nc = undefined;
    await connection?.drain().catch(() => connection.close());
  };

  const ready = (async () => {
    nc = await connect({ servers: opts.url, ...natsConnectOptions(opts.service, opts.tls), waitOnFirstConnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
    // stop() may have run while we waited for NATS: then this connection is not wanted.
    if (stopping) return teardown();
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === "disconnect" && !stopping) opts.logger.warn({ nats: opts.url }, "NATS disconnected; events wait in the outbox");
        if (status.type === "reconnect") {
          opts.logger.info({ nats: opts.url }, "NATS reconnected");
          relay?.notify(); // publish what waited in the outbox now, not at the end of the relay's backoff
        }
      }
    })();
    /**
     * Runs a setup step until it succeeds or the service stops: JetStream may answer slowly (a
     * busy or restarting server) and a consumed stream exists only once its owner has started.
     */
    const retrying = async <T>(what: Record<string, string>, step: () => Promise<T>): Promise<T | undefined> => {
      for (let attempt = 0; !stopping; attempt++) {
        try {
          return await step();
        } catch (err) {
          const waiting = /stream not found/i.test((err as Error).message);
          if (waiting && attempt === 0) opts.logger.info(what, "waiting for the stream's owner to create it");
          if (!waiting && attempt % 30 === 0) opts.logger.warn({ ...what, err }, "event setup failed; retrying");
          await sleep(RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]!);
        }
      }
      return undefined;
    };
    const connection = nc;
    const jsm = await retrying({ step: "jetstream" }, () => connection.jetstreamManager());
    if (!jsm) return teardown();
    const js = connection.jetstream();
    await retrying({ stream: streamName(opts.service) }, () =>
      ensureStreams(jsm, opts.service, opts.subjects, { deadLetters: opts.handlers.length > 0, limits: opts.streamLimits, replicas: opts.streamReplicas }));
    relay = startRelay({ db: opts.db, js, logger: opts.logger });
    const start = async (spec: EventHandlerSpec) => {
      const stream = streamName(ownerOf(spec.event));
      const consumer = await retrying({ stream, consumer: spec.name }, () => consume(js, jsm, {
        durable: durableName(opts.service, spec.name),
        stream,
        event: spec.event,
        handler: handlerOf(opts.db, spec),
        logger: opts.logger,
        maxDeliver: spec.maxDeliver,
        backoffMs: spec.backoffMs,
      }));
      if (stopping) await consumer?.stop(); // stop() ran while it was being made
      else if (consumer) consumers.push(consumer);
    };
    await Promise.all(opts.handlers.map(start));
    if (stopping) return teardown(); // stopped during setup: undo what setup made after stop() ran
    opts.logger.info({ nats: opts.url, consumers: opts.handlers.map((h) => h.name) }, "events connected");
  })();
  ready.catch((err) => opts.logger.error({ err }, "event backbone failed to start"));

  return {
    ready,
    async stop() {
      stopping = true;
      await teardown();
    },
  };
}

