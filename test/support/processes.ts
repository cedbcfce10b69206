// Real infrastructure servers for tests, each on a free port with its data in a temporary folder,
// stopped (and the folder removed) by stop(). Found on PATH or in the Debian locations.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type ConnectionOptions, type NatsConnection } from "nats";
import { natsConnectOptions, natsOperator, natsServerConfig } from "../../mesh/events/nats-config.js";
import { natsServerIdentity } from "../../mesh/topology.js";
import { createTestPki, type TestPki } from "./pki.js";
import { freePort } from "./ports.js";

export interface TestServer {
  port: number;
  url: string;
  dir: string;
  /** Stops the server; `keepData` leaves its folder for a restart. */
  stop(opts?: { keepData?: boolean; signal?: NodeJS.Signals }): Promise<void>;
  /** Starts it again on the same port with the same data (after stop({ keepData: true })). */
  restart(): Promise<void>;
}

function findBinary(name: string, extra: string[]): string {
  const dirs = [...(process.env.PATH ?? "").split(":"), ...extra];
  const found = dirs.map((d) => join(d, name)).find((p) => existsSync(p));
  if (!found) throw new Error(`${name} not found: apt-get install ${name}`);
  return found;
}

async function startProcess(
  name: string, bin: string, args: (port: number, dir: string) => string[], ready: RegExp, scheme: string,
  /** Writes what the server needs in its folder (configuration, certificates) before its first start. */
  prepare?: (port: number, dir: string) => Promise<void>,
): Promise<TestServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `shopmesh-${name}-`));
  await prepare?.(port, dir);
  let child: ChildProcess;
  const launch = async () => {
    child = spawn(bin, args(port, dir), { stdio: ["ignore", "pipe", "pipe"] });
    let log = "";
    child.stdout?.on("data", (d) => (log += d));
    child.stderr?.on("data", (d) => (log += d));
    const deadline = Date.now() + 15_000;
    while (!ready.test(log)) {
      if (child.exitCode !== null || Date.now() > deadline) throw new Error(`${name} did not start:\n${log}`);
      await new Promise((r) => setTimeout(r, 25));
    }
  };
  await launch();
  return {
    port,
    dir,
    url: `${scheme}://127.0.0.1:${port}`,
    async stop({ keepData = false, signal = "SIGTERM" } = {}) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((r) => child.once("exit", r));
        child.kill(signal);
        await exited;
      }
      if (!keepData) rmSync(dir, { recursive: true, force: true });
    },
    restart: launch,
  };
}

export interface NatsTestServer extends TestServer {
  /** The CA whose certificates it accepts. */
  pki: TestPki;
  /** A connection as a mesh identity, as a service connects: by default the operator ("client", every right). */
  connect(opts?: Partial<ConnectionOptions> & { as?: string }): Promise<NatsConnection>;
}

/**
 * nats-server with JetStream, locked as `npm start` runs it: the configuration generated from the
 * topology (TLS only, client certificates of the test CA mapped to users with their permissions),
 * streams stored under a temporary folder.
 */
export async function startNats(pki?: TestPki): Promise<NatsTestServer> {
  const ca = pki ?? (await createTestPki());
  const server = await startProcess("nats", findBinary("nats-server", ["/usr/sbin"]), (_, dir) => ["-c", join(dir, "nats.conf")], /Server is ready/, "tls", async (port, dir) => {
    const own = await ca.ca.issue(natsServerIdentity, [], { serverOnly: true });
    const tlsFiles = { ca: join(dir, "ca.crt"), cert: join(dir, "nats.crt"), key: join(dir, "nats.key") };
    await Promise.all([writeFile(tlsFiles.ca, ca.ca.cert), writeFile(tlsFiles.cert, own.cert), writeFile(tlsFiles.key, own.key, { mode: 0o600 })]);
    await writeFile(join(dir, "nats.conf"), natsServerConfig({ host: "127.0.0.1", port, storeDir: dir, tlsFiles }));
  });
  return {
    ...server,
    pki: ca,
    async connect({ as = natsOperator, ...opts } = {}) {
      return connect({ servers: server.url, timeout: 5_000, ...natsConnectOptions(as, await ca.tls(as)), ...opts });
    },
  };
}

/** redis-server without persistence. */
export const startRedis = () =>
  startProcess("redis", findBinary("redis-server", ["/usr/bin"]), (port, dir) => ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"], /Ready to accept connections/, "redis");
