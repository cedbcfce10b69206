// The gateway writes its access log in blocks (gateway.ts), not a write per line: every request
// still gets its line, and stopping the process writes what was still buffered. The gateway runs
// as its own process, as `npm start` runs it, and its standard output is read as the launcher does.
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { projectRoot } from "../../mesh/service.js";
import { serviceNames } from "../../mesh/topology.js";
import { createTestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { startRedis, type TestServer } from "../support/processes.js";

let redis: TestServer;
beforeAll(async () => {
  redis = await startRedis();
}, 30_000);
afterAll(async () => {
  await redis?.stop();
});

describe("edge: the access log", () => {
  it("has a line for every request, the last ones written when the gateway stops", async () => {
    const pki = await createTestPki();
    const [port, metricsPort, nowhere] = [await freePort(), await freePort(), await freePort()];
    const env = {
      ...process.env,
      PORT: String(port), METRICS_PORT: String(metricsPort), LOG_LEVEL: "info", CERTS_DIR: await pki.dir(["gateway"]), REDIS_URL: redis.url,
      ...Object.fromEntries(serviceNames.map((s) => [`${s.toUpperCase()}_ADDRESSES`, `127.0.0.1:${nowhere}`])),
    };
    const gateway = spawn(process.execPath, ["--import", "tsx", "gateway/main.ts"], { cwd: projectRoot, env, stdio: ["ignore", "pipe", "inherit"] });
    const lines: { msg?: string; request_id?: string }[] = [];
    const serving = new Promise<void>((resolve) => {
      createInterface({ input: gateway.stdout! }).on("line", (line) => {
        const entry = JSON.parse(line);
        lines.push(entry);
        if (entry.msg === "serving") resolve();
      });
    });
    const exited = new Promise((resolve) => gateway.once("exit", resolve));
    try {
      await serving;
      const ids = Array.from({ length: 40 }, (_, i) => `access-log-${i}`);
      for (const id of ids) expect((await fetch(`http://127.0.0.1:${port}/healthz`, { headers: { "x-request-id": id } })).status).toBe(200);
      gateway.kill("SIGTERM");
      expect(await exited).toBe(0);
      const logged = lines.filter((l) => l.msg === "http").map((l) => l.request_id);
      expect(logged).toEqual(ids);
      expect(lines.at(-1)?.msg).toBe("stopped");
    } finally {
      gateway.kill("SIGKILL");
    }
  }, 120_000);
});
