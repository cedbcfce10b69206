// The dashboard's view of the event backbone, as NATS's operator (the "client" certificate, every
// right): events flowing per subject (a core subscription sees what JetStream stores), the lag of
// every durable consumer the topology lists, and the dead letters, which it can replay.
// It connects in the background and keeps trying: the launcher may run without NATS.
import { join } from "node:path";
import { connect, type JetStreamManager, type NatsConnection, type Subscription } from "nats";
import { loadTls } from "../../mesh/certs.js";
import { listDeadLetters, replayDeadLetters, type DeadLetter } from "../../mesh/events/dead-letters.js";
import { DLQ_STREAM, streamName } from "../../mesh/events/events.js";
import { durableName, natsConnectOptions, natsOperator } from "../../mesh/events/nats-config.js";
import { ownerOfSubject, serviceNames, topology, type ServiceName } from "../../mesh/topology.js";

export interface SubjectRate {
  subject: string;
  /** Messages per second over the last `windowSeconds` whole seconds. */
  perSecond: number;
  /** Messages in each of the last `windowSeconds` whole seconds, oldest first. */
  perSecondHistory: number[];
  total: number;
}

export interface SeenEvent {
  time: Date;
  subject: string;
  type: string;
  source: string;
  id: string;
  /** From its traceparent header: the trace that produced it. */
  traceId?: string;
  /** Set on a dead letter published again by a replay: its old sequence number in the DLQ. */
  replayOf?: string;
}

export interface ConsumerLag {
  service: ServiceName;
  consumer: string;
  durable: string;
  stream: string;
  subject: string;
  /** Undefined while the consumer does not exist yet (its service has not started). */
  pending?: number;
  ackPending?: number;
  redelivered?: number;
}

export interface EventWatch {
  /** Why it is not connected, or undefined once it is. */
  status(): string | undefined;
  rates(): SubjectRate[];
  /** The most recent events, newest first. */
  recent(): SeenEvent[];
  lag(): Promise<ConsumerLag[]>;
  deadLetters(): Promise<DeadLetter[]>;
  /** Publishes a dead letter again on its subject and removes it from the DLQ; false if there is no such letter. */
  replay(seq: number): Promise<boolean>;
  stop(): Promise<void>;
}

export interface EventWatchOptions {
  natsUrl: string;
  certsDir: string;
  windowSeconds?: number;
  recentEvents?: number;
  /** Subjects beyond this many are counted under "(other)": memory stays bounded whatever is published. */
  maxSubjects?: number;
}

/** Counts per subject per whole second, kept for `windowSeconds`. */
export class SubjectCounter {
  private readonly subjects = new Map<string, { total: number; seconds: Map<number, number> }>();

  constructor(readonly windowSeconds = 10, readonly maxSubjects = 200) {}

  record(subject: string, nowMs = Date.now()): void {
    const key = this.subjects.has(subject) || this.subjects.size < this.maxSubjects ? subject : "(other)";
    let entry = this.subjects.get(key);
    if (!entry) this.subjects.set(key, (entry = { total: 0, seconds: new Map() }));
    const second = Math.floor(nowMs / 1000);
    entry.total++;
    entry.seconds.set(second, (entry.seconds.get(second) ?? 0) + 1);
    for (const s of entry.seconds.keys()) if (s <= second - this.windowSeconds - 1) entry.seconds.delete(s);
  }

  /** Every subject seen, busiest now first, then by name. The current, unfinished second is left out. */
  snapshot(nowMs = Date.now()): SubjectRate[] {
    const current = Math.floor(nowMs / 1000);
    return [...this.subjects.entries()]
      .map(([subject, { total, seconds }]) => {
        const perSecondHistory = Array.from({ length: this.windowSeconds }, (_, i) => seconds.get(current - this.windowSeconds + i) ?? 0);
        return { subject, total, perSecondHistory, perSecond: perSecondHistory.reduce((a, b) => a + b, 0) / this.windowSeconds };
      })
      .sort((a, b) => b.perSecond - a.perSecond || a.subject.localeCompare(b.subject));
  }
}

/** Every durable consumer the topology lists: `<service>-<name>` on the stream of its subject's owner. */
export function topologyConsumers(): Omit<ConsumerLag, "pending" | "ackPending" | "redelivered">[] {
  return serviceNames.flatMap((service) =>
    Object.entries(topology[service].consumes as Readonly<Record<string, string>>).map(([consumer, subject]) => ({
      service,
      consumer,
      durable: durableName(service, consumer),
      stream: streamName(ownerOfSubject(subject) ?? "unknown"),
      subject,
    })),
  );
}

const TRACEPARENT = /^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$/;

export function watchEvents(opts: EventWatchOptions): EventWatch {
  const counter = new SubjectCounter(opts.windowSeconds, opts.maxSubjects);
  const recentMax = opts.recentEvents ?? 30;
  const recent: SeenEvent[] = [];
  let nc: NatsConnection | undefined;
  let jsm: JetStreamManager | undefined;
  let status: string | undefined = "connecting to NATS";
  let stopped = false;
  let wake: (() => void) | undefined;
  // The DLQ is read again only when its stream changed: listing reads every letter.
  let dlqCache: { key: string; letters: DeadLetter[] } | undefined;

  const onMessage = (subject: string, headers: { get(key: string): string } | undefined) => {
    counter.record(subject);
    const h = (key: string) => headers?.get(key) ?? "";
    recent.unshift({
      time: new Date(),
      subject,
      type: h("ce-type"),
      source: h("ce-source"),
      id: h("ce-id"),
      traceId: TRACEPARENT.exec(h("traceparent"))?.[1],
      replayOf: h("replayed-from-dlq") || undefined,
    });
    if (recent.length > recentMax) recent.pop();
  };

  const watch = (sub: Subscription) =>
    void (async () => {
      for await (const msg of sub) onMessage(msg.subject, msg.headers);
    })().catch(() => {}); // ends when the connection closes

  // Tries until connected (or stopped); once connected, nats.js reconnects by itself forever.
  const connecting = (async () => {
    for (let attempt = 0; !stopped; attempt++) {
      try {
        const tls = await loadTls(opts.certsDir, natsOperator);
        const connection = await connect({ servers: opts.natsUrl, timeout: 2_000, ...natsConnectOptions(natsOperator, tls), maxReconnectAttempts: -1, reconnectTimeWait: 500 });
        if (stopped) return void (await connection.close());
        nc = connection;
        watch(connection.subscribe("shop.>"));
        watch(connection.subscribe("dlq.>"));
        jsm = await connection.jetstreamManager();
        status = undefined;
        void (async () => {
          for await (const s of connection.status()) {
            if (s.type === "disconnect") status = `NATS at ${opts.natsUrl} disconnected; reconnecting`;
            if (s.type === "reconnect") status = undefined;
          }
        })();
        return;
      } catch (err) {
        const missing = (err as NodeJS.ErrnoException).code === "ENOENT";
        status = missing
          ? `no operator certificate (${join(opts.certsDir, `${natsOperator}.crt`)}) yet`
          : `cannot reach NATS at ${opts.natsUrl}: ${(err as Error).message}`;
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, Math.min(500 * 2 ** attempt, 5_000));
          wake = () => (clearTimeout(timer), resolve());
        });
      }
    }
  })();

  const lag = async (): Promise<ConsumerLag[]> => {
    const consumers = topologyConsumers();
    if (!jsm || status) return consumers;
    const manager = jsm;
    return Promise.all(
      consumers.map(async (c) => {
        const info = await manager.consumers.info(c.stream, c.durable).catch(() => undefined);
        return info ? { ...c, pending: info.num_pending, ackPending: info.num_ack_pending, redelivered: info.num_redelivered } : c;
      }),
    );
  };

  const deadLetters = async (): Promise<DeadLetter[]> => {
    if (!jsm || status) return dlqCache?.letters ?? [];
    const info = await jsm.streams.info(DLQ_STREAM).catch(() => undefined);
    const key = info ? `${info.state.first_seq}:${info.state.last_seq}:${info.state.messages}` : "none";
    if (dlqCache?.key !== key) dlqCache = { key, letters: info ? await listDeadLetters(jsm) : [] };
    return dlqCache.letters;
  };

  return {
    status: () => status,
    rates: () => counter.snapshot(),
    recent: () => [...recent],
    lag,
    deadLetters,
    async replay(seq) {
      if (!nc || !jsm || status) throw new Error(status ?? "not connected to NATS");
      const letters = await deadLetters();
      if (!letters.some((l) => l.seq === seq)) return false;
      await replayDeadLetters(nc.jetstream(), jsm, [seq]);
      dlqCache = undefined;
      return true;
    },
    async stop() {
      stopped = true;
      wake?.();
      await connecting;
      await nc?.drain().catch(() => nc?.close());
    },
  };
}
