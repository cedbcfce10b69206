// The mesh as the launcher runs it, for the dashboard's test: every service and the gateway as
// its own node process (PGlite in memory, one nats-server and redis-server), and a MeshView over
// them with states from real health checks and each process's own log lines. Separate processes
// matter here: each exports its spans under its own service.name, as under the launcher (in one
// process the mesh shares a single tracer provider, so every span would carry one name).
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { healthClient } from "../../mesh/rpc/health-client.js";
import { projectRoot } from "../../mesh/service.js";
import { serviceNames } from "../../mesh/topology.js";
import type { MeshView, ProcessState, ProcessView } from "../../launcher/view.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { startNats, startRedis, type NatsTestServer, type TestServer } from "../support/processes.js";

export interface ProcessMeshView extends MeshView {
  pki: TestPki;
  nats: NatsTestServer;
  redis: TestServer;
  /** Spawns every process with `env` added (e.g. OTEL_EXPORTER_OTLP_ENDPOINT); resolves once spawned, not ready. */
  spawnAll(env: Record<string, string>): Promise<void>;
  stop(): Promise<void>;
}

interface Managed {
  view: ProcessView;
  child?: ChildProcess;
  state: ProcessState;
  lines: string[];
}

export async function processMeshView(): Promise<ProcessMeshView> {
  const pki = await createTestPki();
  const [nats, redis] = await Promise.all([startNats(pki), startRedis()]);
  const certsDir = await pki.dir([...serviceNames, "gateway", "client"]);
  const names = [...serviceNames, "gateway"] as const;
  const ports = Object.fromEntries(await Promise.all(names.map(async (n) => [n, { port: await freePort(), metrics: await freePort() }] as const)));
  const gatewayUrl = `http://127.0.0.1:${ports.gateway!.port}`;
  const managed = new Map<string, Managed>();
  for (const name of names) {
    const { port, metrics } = ports[name]!;
    const m: Managed = { state: "stopped", lines: [], view: undefined as unknown as ProcessView };
    m.view = {
      name,
      get state() { return m.state; },
      restarts: 0,
      get pid() { return m.child?.pid; },
      address: name === "gateway" ? gatewayUrl : `grpcs://127.0.0.1:${port}`,
      metricsUrl: `http://127.0.0.1:${metrics}/metrics`,
      logFile: "",
      recentLogs: () => m.lines.slice(-20),
    };
    managed.set(name, m);
  }

  const tls = await pki.tls("client");
  const healthy = async (name: string): Promise<boolean> => {
    if (name === "gateway") return fetch(`${gatewayUrl}/healthz`, { signal: AbortSignal.timeout(1_000) }).then((r) => r.ok, () => false);
    const health = healthClient(`127.0.0.1:${ports[name]!.port}`, name, tls); // a fresh channel: a kept one backs off
    try {
      return (await health.check("", 1_000).catch(() => "DOWN")) === "SERVING";
    } finally {
      health.close();
    }
  };
  let polling = true;
  const poller = (async () => {
    while (polling) {
      await Promise.all([...managed.entries()].map(async ([name, m]) => {
        // Only until it serves: each probe of the gateway is a line in its access log.
        if (!m.child || m.state !== "starting" && m.state !== "migrating") return;
        if (await healthy(name)) m.state = "serving";
      }));
      await new Promise((r) => setTimeout(r, 500));
    }
  })();

  const addresses = Object.fromEntries(serviceNames.map((n) => [`${n.toUpperCase()}_ADDRESSES`, `127.0.0.1:${ports[n]!.port}`]));
  return {
    pki,
    nats,
    redis,
    natsUrl: nats.url,
    certsDir,
    gatewayUrl,
    processes: () => [...managed.values()].map((m) => m.view),
    async spawnAll(env) {
      for (const [name, m] of managed) {
        const entry = name === "gateway" ? join("gateway", "main.ts") : join("services", name, "main.ts");
        const own = {
          NATS_URL: nats.url, REDIS_URL: redis.url, CERTS_DIR: certsDir, LOG_LEVEL: "info", SCRYPT_LOG2_N: "12", DATA_DIR: "memory://",
          PORT: String(ports[name]!.port), METRICS_PORT: String(ports[name]!.metrics), ...addresses, ...env,
        };
        const child = spawn(process.execPath, ["--import", "tsx", entry], { cwd: projectRoot, env: { ...process.env, ...own }, stdio: ["ignore", "pipe", "pipe"] });
        m.child = child;
        m.state = "starting";
        for (const stream of [child.stdout!, child.stderr!]) {
          createInterface({ input: stream }).on("line", (line) => {
            m.lines.push(line);
            if (m.lines.length > 200) m.lines.shift();
            if (m.state === "starting" && line.includes('"msg":"migrating"')) m.state = "migrating";
          });
        }
        child.once("exit", () => (m.state = m.state === "stopping" ? "stopped" : "failed"));
      }
    },
    async stop() {
      polling = false;
      await poller;
      const running = [...managed.values()].filter((m) => m.child && m.child.exitCode === null && m.child.signalCode === null);
      const force = setTimeout(() => running.forEach((m) => m.child!.kill("SIGKILL")), 10_000);
      await Promise.all(running.map((m) => {
        m.state = "stopping";
        const exited = new Promise((r) => m.child!.once("exit", r));
        m.child!.kill("SIGTERM");
        return exited;
      }));
      clearTimeout(force);
      await Promise.all([nats.stop(), redis.stop()]);
    },
  };
}
