// A service's side of the event backbone: its NATS connection, its stream, its outbox relay and
// its consumers. The connection is made in the background and kept up for the process's life: a
// service serves gRPC while NATS is away, its events wait in the outbox, and consumers resume
// where their durable consumer left off when NATS returns.
import type { DescMessage } from "@bufbuild/protobuf";
import { connect, type NatsConnection } from "nats";
import type { Db } from "./db.js";
import { consume, ensureStreams, streamName, type Delivered, type RunningConsumer } from "./events.js";
import { startRelay, type Relay } from "./outbox.js";
import type { Logger } from "./telemetry.js";
import { topology, type ServiceName } from "./topology.js";

/** One event type a service reacts to. */
export interface EventHandlerSpec<S extends DescMessage = DescMessage> {
  event: S;
  /** Short name, unique within the service; the durable consumer is `<service>-<name>`. */
  name: string;
  handler: (event: Delivered<S>) => Promise<void>;
  maxDeliver?: number;
  backoffMs?: readonly number[];
}

/** Typed helper so each spec's handler sees its own event type. */
export const on = <S extends DescMessage>(spec: EventHandlerSpec<S>) => spec as unknown as EventHandlerSpec;

/** The service that owns an event: its proto package shop.<owner>.v1. */
export const ownerOf = (schema: DescMessage): string => schema.file.proto.package.split(".")[1]!;

export interface Eventing {
  /** Wakes the outbox relay (after a commit that enqueued events). */
  notify(): void;
  /** Resolves once connected, streams exist, the relay and every consumer run. */
  readonly ready: Promise<void>;
  stop(): Promise<void>;
}

export interface EventingOptions {
  service: string;
  url: string;
  db: Db;
  logger: Logger;
  /** The subjects this service owns (topology.eventSubjects). */
  subjects: readonly string[];
  handlers: readonly EventHandlerSpec[];
}

export function startEventing(opts: EventingOptions): Eventing {
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
    nc = await connect({ servers: opts.url, name: opts.service, waitOnFirstConnect: true, maxReconnectAttempts: -1, reconnectTimeWait: 500 });
    // stop() may have run while we waited for NATS: then this connection is not wanted.
    if (stopping) return teardown();
    void (async () => {
      for await (const status of nc.status()) {
        if (status.type === "disconnect" && !stopping) opts.logger.warn({ nats: opts.url }, "NATS disconnected; events wait in the outbox");
        if (status.type === "reconnect") opts.logger.info({ nats: opts.url }, "NATS reconnected");
      }
    })();
    const jsm = await nc.jetstreamManager();
    const js = nc.jetstream();
    await ensureStreams(jsm, opts.service, opts.subjects);
    // Streams of the services we consume from may not exist yet if their owner never started.
    for (const owner of new Set(opts.handlers.map((h) => ownerOf(h.event)))) {
      await ensureStreams(jsm, owner, topology[owner as ServiceName]?.eventSubjects ?? []);
    }
    relay = startRelay({ db: opts.db, js, logger: opts.logger });
    for (const spec of opts.handlers) {
      consumers.push(
        await consume(js, jsm, {
          durable: `${opts.service}-${spec.name}`,
          stream: streamName(ownerOf(spec.event)),
          event: spec.event,
          handler: spec.handler,
          logger: opts.logger,
          maxDeliver: spec.maxDeliver,
          backoffMs: spec.backoffMs,
        }),
      );
    }
    if (stopping) return teardown(); // stopped during setup: undo what setup made after stop() ran
    opts.logger.info({ nats: opts.url, consumers: opts.handlers.map((h) => h.name) }, "events connected");
  })();
  ready.catch((err) => opts.logger.error({ err }, "event backbone failed to start"));

  return {
    notify: () => relay?.notify(),
    ready,
    async stop() {
      stopping = true;
      await teardown();
    },
  };
}

