// The gateway alone, for tests of the edge itself: its own redis-server, and every upstream at an
// address where nothing answers, so no request in such a test may need a service.
import { startGateway, type RunningGateway } from "../../gateway/gateway.js";
import { serviceNames } from "../../mesh/topology.js";
import { createTestPki } from "./pki.js";
import { freePort } from "./ports.js";
import { startRedis } from "./processes.js";

export interface LoneGateway {
  gateway: RunningGateway;
  stop(): Promise<void>;
}

export async function startLoneGateway(env: Record<string, string> = {}): Promise<LoneGateway> {
  const redis = await startRedis();
  const nowhere = `127.0.0.1:${await freePort()}`;
  const addresses = Object.fromEntries(serviceNames.map((s) => [`${s.toUpperCase()}_ADDRESSES`, nowhere]));
  const pki = await createTestPki();
  const gateway = await startGateway({
    PORT: "0", METRICS_PORT: "0", LOG_LEVEL: "silent", CERTS_DIR: await pki.dir(["gateway"]), REDIS_URL: redis.url, ...addresses, ...env,
  });
  return {
    gateway,
    async stop() {
      await gateway.stop();
      await redis.stop();
    },
  };
}
