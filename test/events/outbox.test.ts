// The outbox and inbox against a real nats-server and both databases: events exist only for
// committed changes, survive NATS being down, and a redelivered event has one effect.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { JetStreamManager, NatsConnection } from "nats";
import { UserRegisteredSchema } from "../../gen/shop/identity/v1/events_pb.js";
import { meshMigrations, migrate, openDb, type Db, type Tx } from "../../mesh/data/db.js";
import { ensureStreams, streamName } from "../../mesh/events/events.js";
import { applyOnce } from "../../mesh/events/inbox.js";
import { enqueue, startRelay } from "../../mesh/events/outbox.js";
import { startPostgres, type TestPostgres } from "../support/postgres.js";
import { startNats, type NatsTestServer } from "../support/processes.js";
import { silentLogger, sleep } from "../support/servers.js";
import { eventually } from "../support/eventually.js";

let nats: NatsTestServer;
let nc: NatsConnection;
let jsm: JetStreamManager;
let pg: TestPostgres;

beforeAll(async () => {
  [nats, pg] = await Promise.all([startNats(), startPostgres()]);
  nc = await nats.connect({ maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  jsm = await nc.jetstreamManager();
  await ensureStreams(jsm, "identity", ["shop.user.>"]);
});
afterAll(async () => {
  await nc?.close();
  await Promise.all([nats?.stop(), pg?.stop()]);
});

const streamCount = async () => (await jsm.streams.info(streamName("identity"))).state.messages;
const pending = async (db: Db) => (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM outbox WHERE published_at IS NULL"))[0]!.n;

describe.each([
  ["PGlite", async () => openDb({ dataDir: "memory://" })],
  ["PostgreSQL", async (name: string) => (await pg.createDatabase(name), openDb({ url: pg.url(name) }))],
])("outbox on %s", (_label, open) => {
  let db: Db;
  let n = 0;
  beforeAll(async () => {
    db = await open(`outbox_${Date.now()}`);
    await migrate(db, meshMigrations, "mesh/");
  });
  afterAll(() => db?.close());

  it("publishes events of committed transactions, in order, and never those of rolled-back ones", async () => {
    const before = await streamCount();
    const ids: string[] = [];
    await db.tx(async (q) => {
      for (let i = 0; i < 3; i++) ids.push(enqueue(q, UserRegisteredSchema, { userId: `u${++n}` }, { source: "identity" }));
    });
    await db.tx(async (q) => {
      await enqueue(q, UserRegisteredSchema, { userId: "never" }, { source: "identity" });
      throw new Error("roll back");
    }).catch(() => {});
    const relay = startRelay({ db, js: nc.jetstream(), logger: silentLogger, intervalMs: 20 });
    for (let i = 0; i < 100 && (await pending(db)) > 0; i++) await sleep(20);
    await relay.stop();
    expect(await streamCount()).toBe(before + 3);
    const stored = await Promise.all([1, 2, 3].map((k) => jsm.streams.getMessage(streamName("identity"), { seq: before + k })));
    expect(stored.map((m) => m.header.get("ce-id"))).toEqual(ids);
  });

  it("publishes a transaction's events from memory right after its commit, and marks them", async () => {
    const before = await streamCount();
    // The poll would next look in a minute: whatever goes out sooner went from memory.
    const relay = startRelay({ db, js: nc.jetstream(), logger: silentLogger, intervalMs: 60_000, maxIntervalMs: 60_000 });
    await relay.flush(); // the start's poll is done (nothing pending from the tests before)
    const ids = await db.tx(async (q) => [1, 2, 3].map((i) => enqueue(q, UserRegisteredSchema, { userId: `mem${i}` }, { source: "identity" })));
    await eventually(streamCount, (n) => n === before + 3);
    const stored = await Promise.all([1, 2, 3].map((k) => jsm.streams.getMessage(streamName("identity"), { seq: before + k })));
    expect(stored.map((m) => m.header.get("ce-id"))).toEqual(ids);
    await eventually(() => pending(db), (n) => n === 0); // marked in a batch shortly after
    await relay.stop();
  });

  it("keeps events while NATS is down and publishes them, once, when it is back", async () => {
    const before = await streamCount();
    const relay = startRelay({ db, js: nc.jetstream(), logger: silentLogger, intervalMs: 20, publishTimeoutMs: 300 });
    await nats.stop({ keepData: true });
    await db.tx(async (q) => {
      for (let i = 0; i < 5; i++) await enqueue(q, UserRegisteredSchema, { userId: `down${++n}` }, { source: "identity" });
    });
    relay.notify();
    await sleep(500);
    expect(await pending(db)).toBe(5);
    await nats.restart();
    for (let i = 0; i < 250 && (await pending(db)) > 0; i++) await sleep(20);
    await relay.stop();
    expect(await pending(db)).toBe(0);
    expect(await streamCount()).toBe(before + 5);
  });

  it("gives a redelivered event one effect (inbox), also within one batch and across racing batches", async () => {
    await db.query("CREATE TABLE IF NOT EXISTS effects (id text)");
    const effect = async (q: Tx, e: { id: string }) => void (await q.query("INSERT INTO effects VALUES ($1)", [e.id]));
    const once = async (consumer: string, ...ids: string[]) => (await applyOnce(db, consumer, ids.map((id) => ({ id })), effect)).map((e) => e.id);
    const raced = await Promise.all([once("c", "evt-x", "evt-w"), once("c", "evt-w", "evt-x")]);
    expect(raced.flat().sort()).toEqual(["evt-w", "evt-x"]); // each applied by exactly one of the two
    expect(await once("c", "evt-x", "evt-v", "evt-v")).toEqual(["evt-v"]); // a redelivery, and an id twice in a batch
    expect(await once("other-consumer", "evt-x")).toEqual(["evt-x"]);
    await expect(applyOnce(db, "c", [{ id: "evt-y" }, { id: "evt-z" }], async (q, e) => {
      await effect(q, e);
      if (e.id === "evt-z") throw new Error("effect failed");
    })).rejects.toThrow("effect failed");
    expect(await once("c", "evt-y")).toEqual(["evt-y"]); // the failed batch recorded nothing, not even its good event
    expect(await db.query("SELECT id, count(*)::int AS n FROM effects GROUP BY id ORDER BY id")).toEqual([
      { id: "evt-v", n: 1 }, { id: "evt-w", n: 1 }, { id: "evt-x", n: 2 }, { id: "evt-y", n: 1 },
    ]);
  });
});
