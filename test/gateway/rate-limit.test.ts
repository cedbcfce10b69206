// The edge's rate limit, decided in memory and shared through Redis in the background: two
// gateway replicas on one real redis-server limit one key to its configured count, overshooting
// by at most what the replicas admit before they hear of each other (one sync interval); with
// Redis gone each replica still limits on its own. The requests go to a path no route serves
// (404): the limit comes first, so no service is needed.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import { startGateway, type RunningGateway } from "../../gateway/gateway.js";
import { serviceNames } from "../../mesh/topology.js";
import { createTestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { startRedis, type TestServer } from "../support/processes.js";
import { eventually } from "../support/eventually.js";

const LIMIT = 10;
let redis: TestServer;
let redisClient: Redis;
const gateways: RunningGateway[] = [];

beforeAll(async () => {
  redis = await startRedis();
  redisClient = new Redis(redis.url);
  redisClient.on("error", () => {}); // while the last test has Redis down
  const pki = await createTestPki();
  const nowhere = `127.0.0.1:${await freePort()}`;
  const env = {
    PORT: "0", METRICS_PORT: "0", LOG_LEVEL: "silent", CERTS_DIR: await pki.dir(["gateway"]), REDIS_URL: redis.url,
    ...Object.fromEntries(serviceNames.map((s) => [`${s.toUpperCase()}_ADDRESSES`, nowhere])),
    RATE_LIMIT_POINTS: String(LIMIT), RATE_LIMIT_WINDOW_SECONDS: "600", RATE_LIMIT_BURST: "0", RATE_LIMIT_SYNC_MS: "50",
    TRUSTED_PROXY_HOPS: "1", // so each test's requests can come from an address of its own
  };
  for (let i = 0; i < 2; i++) gateways.push(await startGateway(env));
}, 60_000);
afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop()));
  redisClient?.disconnect();
  await redis?.stop();
});

const hit = async (g: RunningGateway, client: string) => {
  const res = await fetch(`http://127.0.0.1:${g.port}/v1/nothing-here`, { headers: { "x-forwarded-for": client } });
  return { status: res.status, headers: res.headers, body: await res.json() };
};
/** What the replicas have reported for `client` so far. */
const shared = async (client: string) => Number((await redisClient.get(`gateway:rl:steady:ip:${client}`)) ?? 0);

describe("edge: rate limits shared by replicas", () => {
  it("limit one key to about its count across two replicas that share their counts as they go", async () => {
    const client = "10.0.0.1";
    const statuses: number[] = [];
    for (let i = 0; i < LIMIT + 6; i++) {
      statuses.push((await hit(gateways[i % 2]!, client)).status);
      await eventually(() => shared(client), (n) => n === i + 1); // that replica has reported this request
    }
    // A replica hears the others' counts when it reports its own: the request it serves after the
    // other's last one may still pass, once. Then the key is refused everywhere.
    const admitted = statuses.filter((s) => s === 404).length;
    expect(statuses.slice(0, LIMIT)).toEqual(Array(LIMIT).fill(404));
    expect(admitted).toBeLessThanOrEqual(LIMIT + 1);
    expect(statuses.slice(admitted)).toEqual(Array(statuses.length - admitted).fill(429));
  });

  it("overshoot, when requests come faster than the replicas share, by at most what each admits alone", async () => {
    const client = "10.0.0.2";
    const answers = await Promise.all(Array.from({ length: 4 * LIMIT }, (_, i) => hit(gateways[i % 2]!, client)));
    const admitted = answers.filter((r) => r.status !== 429).length;
    expect(admitted).toBeGreaterThanOrEqual(LIMIT);
    expect(admitted).toBeLessThanOrEqual(gateways.length * LIMIT); // each replica stops at the limit on its own count
    const refused = answers.find((r) => r.status === 429)!;
    expect(Number(refused.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(refused.headers.get("ratelimit-remaining")).toBe("0");
    expect(refused.body.code).toBe("resource_exhausted");
    // Once shared, both replicas refuse the key.
    await eventually(() => shared(client), (n) => n === 4 * LIMIT);
    for (const g of gateways) expect((await hit(g, client)).status).toBe(429);
  });

  it("keep limiting each replica on its own while Redis is down", async () => {
    await redis.stop({ keepData: true });
    try {
      const statuses = [];
      for (let i = 0; i <= LIMIT; i++) statuses.push((await hit(gateways[0]!, "10.0.0.3")).status);
      expect(statuses).toEqual([...Array(LIMIT).fill(404), 429]);
    } finally {
      await redis.restart();
    }
  });
});
