// Reading what services published, straight from their JetStream streams.
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { headers as natsHeaders, type JetStreamClient, type JetStreamManager } from "nats";
import { eventSubject, streamName, type EncodedEvent } from "../../mesh/events/events.js";
import { ownerOf } from "../../mesh/events/eventing.js";

export interface StoredEvent<S extends DescMessage> {
  seq: number;
  id: string;
  data: MessageShape<S>;
}

/** Every stored event of one type, oldest first. */
export async function storedEvents<S extends DescMessage>(jsm: JetStreamManager, schema: S): Promise<StoredEvent<S>[]> {
  const stream = streamName(ownerOf(schema));
  const subject = eventSubject(schema);
  const { state } = await jsm.streams.info(stream).catch(() => ({ state: { first_seq: 1, last_seq: 0 } }));
  const events: StoredEvent<S>[] = [];
  for (let seq = state.first_seq; seq <= state.last_seq; seq++) {
    const msg = await jsm.streams.getMessage(stream, { seq }).catch(() => undefined);
    if (msg?.subject === subject) events.push({ seq, id: msg.header.get("ce-id"), data: fromBinary(schema, msg.data) });
  }
  return events;
}

/** Publishes one event twice under different Nats-Msg-Ids (past JetStream's dedupe), as a redelivery looks to consumers. */
export async function publishTwice(js: JetStreamClient, event: EncodedEvent): Promise<void> {
  for (const copy of ["first", "second"]) {
    const h = natsHeaders();
    for (const [k, v] of Object.entries(event.headers)) h.set(k, v);
    await js.publish(event.subject, event.payload, { headers: h, msgID: `${event.id}-${copy}` });
  }
}

/** True when each [stream, durable] consumer has nothing left to deliver and nothing unacknowledged. */
export async function consumersIdle(jsm: JetStreamManager, ...consumers: [stream: string, durable: string][]): Promise<boolean> {
  const infos = await Promise.all(consumers.map(([stream, durable]) => jsm.consumers.info(stream, durable)));
  return infos.every((info) => info.num_pending === 0 && info.num_ack_pending === 0);
}
