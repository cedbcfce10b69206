// Real infrastructure servers for tests, each on a free port with its data in a temporary folder,
// stopped (and the folder removed) by stop(). Found on PATH or in the Debian locations.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

async function startProcess(name: string, bin: string, args: (port: number, dir: string) => string[], ready: RegExp, scheme: string): Promise<TestServer> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), `shopmesh-${name}-`));
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

/** nats-server with JetStream, storing its streams under a temporary folder. */
export const startNats = () =>
  startProcess("nats", findBinary("nats-server", ["/usr/sbin"]), (port, dir) => ["-js", "-a", "127.0.0.1", "-p", String(port), "-sd", dir], /Server is ready/, "nats");

/** redis-server without persistence. */
export const startRedis = () =>
  startProcess("redis", findBinary("redis-server", ["/usr/bin"]), (port, dir) => ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no"], /Ready to accept connections/, "redis");
