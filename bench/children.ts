// The processes of a run that are not the mesh: the load generator, the raw baseline server and
// the bare parts, each forked from this process (its TypeScript loader is inherited) and driven
// over IPC.
import { fork, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import { createCa } from "../mesh/certs.js";
import type { Job, LoadMessage, ResultOf, Shopper } from "./jobs.js";

/** Forks a file of bench/ with this process's loader, and `nodeArgs` for V8 besides. */
const forkHere = (file: string, nodeArgs: readonly string[] = []) =>
  fork(fileURLToPath(new URL(file, import.meta.url)), [], { stdio: ["ignore", "inherit", "inherit", "ipc"], execArgv: [...process.execArgv, ...nodeArgs] });

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  await exited;
}

/** The next message from `child`; fails if it exits first. */
function nextMessage<T>(child: ChildProcess): Promise<T> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null, signal: string | null) => reject(new Error(`${child.spawnargs.at(-1)} exited (${signal ?? code})`));
    child.once("exit", onExit);
    child.once("message", (m: T) => (child.off("exit", onExit), resolve(m)));
  });
}

/** Called as the load generator's measured window starts and ends. */
export interface WindowMarks {
  start(): void;
  end(): void;
}

export class LoadGenerator {
  private constructor(private readonly child: ChildProcess) {}

  static start(): LoadGenerator {
    return new LoadGenerator(forkHere("./loadgen.ts"));
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  run<J extends Job>(job: J, marks: WindowMarks): Promise<ResultOf<J>> {
    return new Promise((resolve, reject) => {
      const done = () => (this.child.off("message", onMessage), this.child.off("exit", onExit));
      const onExit = (code: number | null) => (done(), reject(new Error(`the load generator exited (${code}) during a ${job.kind} job`)));
      const onMessage = (m: LoadMessage) => {
        if (m.type === "window") return m.edge === "start" ? marks.start() : marks.end();
        done();
        if (m.type === "done") resolve(m.result as ResultOf<J>);
        else reject(new Error(`load generator, ${job.kind} job: ${m.message}`));
      };
      this.child.on("message", onMessage);
      this.child.once("exit", onExit);
      this.child.send(job);
    });
  }

  stop = () => stopChild(this.child);
}

export interface RawServer {
  port: number;
  pid: number | undefined;
  /** Answers each path with its body from now on. */
  serve(bodies: Record<string, string>): Promise<void>;
  stop(): Promise<void>;
}

export async function startRawServer(): Promise<RawServer> {
  const child = forkHere("./raw-server.ts");
  const { port } = await nextMessage<{ port: number }>(child);
  return {
    port,
    pid: child.pid,
    async serve(bodies) {
      const answered = nextMessage(child);
      child.send(bodies);
      await answered;
    },
    stop: () => stopChild(child),
  };
}

/** The orders row's second baseline (bench/bare-parts.ts): a bare edge and a bare order service, each its own process. */
export interface BareParts {
  port: number;
  pids: { edge: number | undefined; order: number | undefined };
  stop(): Promise<void>;
}

/** `nodeArgs`: the flags the mesh's own processes run with, so that both pay the same for GC. */
export async function startBareParts(databaseUrl: string, shoppers: readonly Shopper[], nodeArgs: readonly string[]): Promise<BareParts> {
  const ca = await createCa("bare parts CA");
  const tlsOf = async (name: string) => ({ ca: ca.cert, ...(await ca.issue(name)) });
  const started: ChildProcess[] = [];
  const start = async (setup: object) => {
    const child = forkHere("./bare-parts.ts", nodeArgs);
    started.push(child);
    child.send(setup);
    return { child, port: (await nextMessage<{ port: number }>(child)).port };
  };
  const stop = async () => void (await Promise.all(started.map(stopChild)));
  try {
    const order = await start({ role: "order", tls: await tlsOf("order"), databaseUrl });
    // Token → user, as the gateway's verified-token cache holds it.
    const users = Object.fromEntries(shoppers.map((s) => [s.token, s.userId]));
    const edge = await start({ role: "edge", tls: await tlsOf("gateway"), orderAddress: `127.0.0.1:${order.port}`, users });
    return { port: edge.port, pids: { edge: edge.child.pid, order: order.child.pid }, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
