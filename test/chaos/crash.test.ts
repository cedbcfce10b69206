// Crashes: a service killed with SIGKILL after committing a change and before publishing its
// event, and a consumer that dies before acknowledging. Nothing is lost and nothing happens twice.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NatsConnection } from "nats";
import { UserRegisteredSchema } from "../../gen/shop/identity/v1/events_pb.js";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { OrderCreatedSchema } from "../../gen/shop/order/v1/events_pb.js";
import { meshMigrations, migrate, openDb, type Db } from "../../mesh/data/db.js";
import { consume, ensureStreams, publishEvent, streamName } from "../../mesh/events/events.js";
import { applyOnce } from "../../mesh/events/inbox.js";
import { ChildProgress } from "../support/child-progress.js";
import { eventually } from "../support/eventually.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { startNats, type NatsTestServer } from "../support/processes.js";
import { clientFor, silentLogger, sleep } from "../support/servers.js";
import { storedEvents } from "../support/streams.js";

let nats: NatsTestServer;
let pki: TestPki;
beforeAll(async () => {
  pki = await createTestPki();
  nats = await startNats(pki);
});
afterAll(() => nats?.stop());

/** Processes this file started: killed after each test, whatever its outcome. */
const children = new Set<ChildProcess>();
afterEach(() => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  children.clear();
});

/** Starts identity as its own process and waits (on its progress, not a clock) until it serves. */
async function startIdentityProcess(env: Record<string, string>): Promise<ChildProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", "services/identity/main.ts"], {
    env: { ...process.env, LOG_LEVEL: "info", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.add(child);
  await new ChildProgress(child).waitForLine(/"msg":"serving"/);
  return child;
}

describe("a service killed between commit and publish", () => {
  it("publishes the committed event after it restarts", async () => {
    const [port, metricsPort] = [await freePort(), await freePort()];
    const env = {
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      CERTS_DIR: await pki.dir(["identity"]),
      DATA_DIR: await mkdtemp(join(tmpdir(), "shopmesh-crash-")),
      NATS_URL: nats.url,
    };
    await nats.stop({ keepData: true }); // the relay cannot publish: the row stays in the outbox
    const first = await startIdentityProcess(env);
    const client = await clientFor(pki, IdentityService, "identity", [`127.0.0.1:${port}`]);
    const { user } = await client.register({ email: "crash@shop.test", password: "correct horse", displayName: "Crash" });
    client.close();
    first.kill("SIGKILL"); // committed, never published
    await new Promise((r) => first.once("exit", r));

    await nats.restart();
    const second = await startIdentityProcess(env);
    const nc = await nats.connect();
    const jsm = await nc.jetstreamManager();
    const published = await eventually(
      async () => (await storedEvents(jsm, UserRegisteredSchema)).filter((e) => e.data.userId === user!.id),
      (events) => events.length > 0,
      20_000,
    );
    expect(published).toHaveLength(1);
    expect(published[0]!.data.email).toBe("crash@shop.test");
    second.kill("SIGTERM");
    await new Promise((r) => second.once("exit", r));
    await nc.close();
  }, 90_000);
});

describe("a consumer that dies before its ack", () => {
  let nc: NatsConnection;
  let db: Db;
  beforeAll(async () => {
    nc = await nats.connect({ maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    await ensureStreams(await nc.jetstreamManager(), "order", ["shop.order.>"]);
    db = await openDb({ dataDir: "memory://" });
    await migrate(db, meshMigrations, "mesh/");
    await db.query("CREATE TABLE effects (order_id text)");
  });
  afterAll(async () => {
    await db?.close();
    await nc?.close();
  });

  it("gets the event again within seconds (the ack wait), and the inbox keeps the effect single", async () => {
    const js = nc.jetstream();
    const jsm = await nc.jetstreamManager();
    let deliveries = 0;
    let firstDelivery = 0;
    let redelivery = 0;
    const effect = (events: { id: string; data: { orderId: string } }[]) =>
      applyOnce(db, "count", events, async (q, { data }) => void (await q.query("INSERT INTO effects VALUES ($1)", [data.orderId])));
    // The first consumer commits its effect, then "dies": it never acknowledges. It has its own
    // connection, as its own process would; closing it is the death (no ack, no more heartbeats).
    const doomed = await nats.connect();
    const dying = await consume(doomed.jetstream(), await doomed.jetstreamManager(), {
      durable: "crash-consumer", stream: streamName("order"), event: OrderCreatedSchema, logger: silentLogger,
      handler: async (events) => {
        deliveries++;
        firstDelivery = Date.now();
        await effect(events);
        await new Promise(() => {}); // no ack, ever
      },
    });
    await publishEvent(js, OrderCreatedSchema, { orderId: "o-crash" }, { source: "order" });
    await eventually(() => deliveries, (n) => n === 1);
    await doomed.close(); // its process is gone; the message stays unacknowledged
    void dying.stop();

    const survivor = await consume(js, jsm, {
      durable: "crash-consumer", stream: streamName("order"), event: OrderCreatedSchema, logger: silentLogger,
      handler: async (events) => {
        deliveries++;
        redelivery ||= Date.now();
        await effect(events);
      },
    });
    await eventually(() => deliveries, (n) => n >= 2, 45_000); // generous: long enough for the old 30 s ack wait too
    expect(redelivery - firstDelivery).toBeLessThan(10_000); // the default ack wait is 5 s (it was 30 s)
    await sleep(300);
    expect(await db.query("SELECT count(*)::int AS n FROM effects WHERE order_id = 'o-crash'")).toEqual([{ n: 1 }]);
    expect((await jsm.consumers.info(streamName("order"), "crash-consumer")).num_ack_pending).toBe(0);
    await survivor.stop();
  }, 60_000);
});
