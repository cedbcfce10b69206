// Reading and replaying the dead-letter stream (SHOP_DLQ). A dead letter keeps the original
// event's headers and payload plus dlq-reason, dlq-consumer, dlq-subject and dlq-deliveries.
// Replaying publishes it again on its original subject: the consumer that failed gets it anew,
// and consumers that had already handled it skip it through their inbox.
import { headers as natsHeaders, type JetStreamClient, type JetStreamManager } from "nats";
import { DLQ_STREAM } from "./events.js";

export interface DeadLetter {
  seq: number;
  consumer: string;
  subject: string;
  eventId: string;
  type: string;
  reason: string;
  deliveries: number;
  time: Date;
}

export async function listDeadLetters(jsm: JetStreamManager): Promise<DeadLetter[]> {
  const info = await jsm.streams.info(DLQ_STREAM).catch((err: Error) => {
    if (/stream not found/i.test(err.message)) return undefined; // nothing has ever been dead-lettered
    throw err;
  });
  if (!info) return [];
  const { state } = info;
  const letters: DeadLetter[] = [];
  for (let seq = state.first_seq; seq <= state.last_seq && state.messages > 0; seq++) {
    const msg = await jsm.streams.getMessage(DLQ_STREAM, { seq }).catch(() => undefined); // deleted ones are gaps
    if (!msg) continue;
    const h = (key: string) => msg.header.get(key);
    letters.push({
      seq,
      consumer: h("dlq-consumer"),
      subject: h("dlq-subject"),
      eventId: h("ce-id"),
      type: h("ce-type"),
      reason: h("dlq-reason"),
      deliveries: Number(h("dlq-deliveries")),
      time: msg.time,
    });
  }
  return letters;
}

/** Publishes the chosen dead letters on their original subjects and removes them from the DLQ. */
export async function replayDeadLetters(js: JetStreamClient, jsm: JetStreamManager, seqs: number[]): Promise<number> {
  let replayed = 0;
  for (const seq of seqs) {
    const msg = await jsm.streams.getMessage(DLQ_STREAM, { seq });
    const h = natsHeaders();
    for (const [key, values] of msg.header) {
      if (key.startsWith("dlq-") || key === "Nats-Msg-Id") continue;
      for (const value of values) h.append(key, value);
    }
    h.set("replayed-from-dlq", String(seq));
    // A new message id: the original may still be inside the duplicate window. Consumers dedupe
    // by ce-id in their inbox, so a replay never has a second effect.
    await js.publish(msg.header.get("dlq-subject"), msg.data, { headers: h, msgID: `replay-${seq}-${msg.header.get("ce-id")}` });
    await jsm.streams.deleteMessage(DLQ_STREAM, seq);
    replayed++;
  }
  return replayed;
}
