// Where notifications go. The default sender records each message in the service's database
// (ListNotifications reads them) and logs it; a real deployment plugs in an email provider here.
import { v7 as uuidv7 } from "uuid";
import type { Queryable } from "../../mesh/data/db.js";
import type { Logger } from "../../mesh/telemetry.js";

export interface Message {
  userId: string;
  recipient: string;
  subject: string;
  body: string;
  sourceEventId: string;
  sourceEventType: string;
}

export interface Sender {
  /**
   * Sends each message once per sourceEventId, however often it is asked to (events are
   * redelivered): the database sender by its unique column; a mail provider by its idempotency key.
   */
  send(q: Queryable, messages: readonly Message[]): Promise<void>;
}

export function databaseSender(logger: Logger): Sender {
  return {
    async send(q, messages) {
      const column = <K extends keyof Message>(key: K) => messages.map((m) => m[key]);
      const inserted = await q.query<{ source_event_id: string }>(
        `INSERT INTO notifications (id, user_id, recipient, subject, body, source_event_id, source_event_type)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[])
         ON CONFLICT (source_event_id) DO NOTHING RETURNING source_event_id`,
        [messages.map(() => uuidv7()), column("userId"), column("recipient"), column("subject"), column("body"), column("sourceEventId"), column("sourceEventType")],
      );
      // Logged once each: a redelivered event's message is already there, and not sent again.
      const sent = new Set(inserted.map((r) => r.source_event_id));
      for (const m of messages) if (sent.has(m.sourceEventId)) logger.info({ user_id: m.userId, to: m.recipient || undefined, subject: m.subject }, "notification sent");
    },
  };
}
