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
  /** Sends inside the caller's transaction, so the record and the inbox entry commit together. */
  send(q: Queryable, message: Message): Promise<void>;
}

export function databaseSender(logger: Logger): Sender {
  return {
    async send(q, m) {
      await q.query(
        `INSERT INTO notifications (id, user_id, recipient, subject, body, source_event_id, source_event_type)
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (source_event_id) DO NOTHING`,
        [uuidv7(), m.userId, m.recipient, m.subject, m.body, m.sourceEventId, m.sourceEventType],
      );
      logger.info({ user_id: m.userId, to: m.recipient || undefined, subject: m.subject }, "notification sent");
    },
  };
}
