// When a service behind the edge fails at the transport level (it does not answer in time, it is
// not there, its connection breaks), callers learn what failed, never where: no internal address,
// no grpc-js text. The catalog here is a real mTLS gRPC server whose handler never answers, or
// nothing at all.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { startGateway, type RunningGateway } from "../../gateway/gateway.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { startRedis, type TestServer } from "../support/processes.js";
import { startServer, type StubServer } from "../support/servers.js";

let pki: TestPki;
let redis: TestServer;
let silentCatalog: StubServer;
const gateways: RunningGateway[] = [];

beforeAll(async () => {
  pki = await createTestPki();
  redis = await startRedis();
  // Accepts the call and never answers, until the caller gives up.
  silentCatalog = await startServer(pki, "catalog", CatalogService, {
    getProduct: (_req, ctx) => new Promise((_, reject) => ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason))),
  }, { drainTimeoutMs: 100 });
}, 60_000);
afterAll(async () => {
  await Promise.all(gateways.map((g) => g.stop()));
  await silentCatalog?.drain();
  await redis?.stop();
});

async function gatewayWithCatalogAt(address: string, timeoutMs: number) {
  const g = await startGateway({
    PORT: "0", METRICS_PORT: "0", LOG_LEVEL: "silent", CERTS_DIR: await pki.dir(["gateway"]), REDIS_URL: redis.url,
    CATALOG_ADDRESSES: address, UPSTREAM_TIMEOUT_MS: String(timeoutMs),
  });
  gateways.push(g);
  return g;
}

const productPath = "/v1/products/0190a000-0000-7000-8000-000000000001";
/** Nothing a caller may see about our insides: addresses, ports, grpc-js and Node error texts. */
const INTERNALS = /\d+\.\d+\.\d+\.\d+|:\d{2,5}\b|remote_addr|LB pick|ECONN|RST_STREAM|No connection established|subchannel|Deadline exceeded after|circuit|upstream/i;

describe("edge: an upstream that fails at the transport level", () => {
  it("that does not answer in time is 504 saying which service did not answer, not where it is", async () => {
    const g = await gatewayWithCatalogAt(silentCatalog.address, 300);
    const res = await fetch(`http://127.0.0.1:${g.port}${productPath}`);
    expect(res.status).toBe(504);
    const body = await res.json();
    expect(body.code).toBe("deadline_exceeded");
    expect(body.message).toMatch(/catalog service did not answer in time/);
    expect(body.message).not.toMatch(INTERNALS);

    const catalog = createClient(CatalogService, createConnectTransport({ baseUrl: `http://127.0.0.1:${g.port}`, httpVersion: "1.1" }));
    const err = await catalog.getProduct({ id: "0190a000-0000-7000-8000-000000000001" }).catch((e) => ConnectError.from(e));
    expect((err as ConnectError).code).toBe(Code.DeadlineExceeded);
    expect((err as ConnectError).rawMessage).toMatch(/catalog service did not answer in time/);
    expect((err as ConnectError).rawMessage).not.toMatch(INTERNALS);
  });

  it("that is not there is 503 saying which service is unavailable, not where it is", async () => {
    const g = await gatewayWithCatalogAt(`127.0.0.1:${await freePort()}`, 10_000); // refused long before
    // Enough calls to open the breaker as well: its message must not leak either.
    for (let i = 0; i < 8; i++) {
      const res = await fetch(`http://127.0.0.1:${g.port}${productPath}`);
      expect(res.status).toBe(503);
      const body = await res.json();
      expect(body.code).toBe("unavailable");
      expect(body.message).toMatch(/catalog service is unavailable/);
      expect(body.message).not.toMatch(INTERNALS);
    }
  });
});
