// Where card numbers must never be: any database (but payment's, while a charge is pending), any
// JetStream stream (events, dead letters), any log line. Scans for the processor's test cards.
import type { NatsConnection } from "nats";
import pg from "pg";
import { testCards } from "../../services/payment/processor.js";

const cardPattern = Object.values(testCards).join("|");
const cardRegex = new RegExp(cardPattern);

/** True when `text` contains a full test card number. */
export const hasCardNumber = (text: string): boolean => cardRegex.test(text);

export interface CardFinding {
  where: string;
  rows: number;
}

/**
 * Every table of a database, every text-like, JSON or binary column (binary as its bytes: a
 * protobuf payload keeps a string's bytes as they are). `allowed` exempts rows by table: an SQL
 * condition under which a card number may be stored there.
 */
export async function scanDatabase(url: string, label: string, allowed: Record<string, string> = {}): Promise<CardFinding[]> {
  const client = new pg.Client({ connectionString: url });
  client.on("error", () => {});
  await client.connect();
  try {
    const columns = await client.query<{ table_name: string; column_name: string; data_type: string }>(
      `SELECT c.table_name, c.column_name, c.data_type FROM information_schema.columns c
       JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name AND t.table_type = 'BASE TABLE'
       WHERE c.table_schema = 'public' AND c.data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea', 'ARRAY')`,
    );
    const byTable = new Map<string, string[]>();
    for (const { table_name, column_name, data_type } of columns.rows) {
      const col = `"${column_name}"`;
      const expr = data_type === "bytea" ? `encode(${col}, 'escape')` : `${col}::text`;
      byTable.set(table_name, [...(byTable.get(table_name) ?? []), `${expr} ~ $1`]);
    }
    const findings: CardFinding[] = [];
    for (const [table, conditions] of byTable) {
      const exempt = allowed[table] ? ` AND NOT (${allowed[table]})` : "";
      const { rows } = await client.query<{ n: number }>(`SELECT count(*)::int AS n FROM "${table}" WHERE (${conditions.join(" OR ")})${exempt}`, [cardPattern]);
      if (rows[0]!.n > 0) findings.push({ where: `${label} database, table ${table}`, rows: rows[0]!.n });
    }
    return findings;
  } finally {
    await client.end();
  }
}

/** Every message of every stream (data and headers). */
export async function scanStreams(nc: NatsConnection): Promise<{ messages: number; findings: CardFinding[] }> {
  const jsm = await nc.jetstreamManager();
  const js = nc.jetstream();
  const findings: CardFinding[] = [];
  let messages = 0;
  for await (const info of jsm.streams.list()) {
    const stream = info.config.name;
    if (info.state.messages === 0) continue;
    const consumer = await js.consumers.get(stream); // an ordered consumer: reads everything once
    let found = 0;
    const iter = await consumer.consume();
    for await (const msg of iter) {
      messages++;
      const text = Buffer.from(msg.data).toString("latin1") + (msg.headers ? [...msg.headers.keys()].map((k) => msg.headers!.get(k)).join("\n") : "");
      if (hasCardNumber(text)) found++;
      if (msg.info.pending === 0) break;
    }
    await iter.close();
    if (found) findings.push({ where: `stream ${stream}`, rows: found });
  }
  return { messages, findings };
}
