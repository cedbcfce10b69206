// The servers the mesh stands on, for `npm start`: each is used where it is already reachable (or
// named by its URL variable), else started from the installed binary with its data under .data/,
// else named with the command that installs it and what works without it.
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync } from "node:fs";
import { connect as tcpConnect } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { ensureDatabases, findPostgresBin, PostgresAccessError, postgresUrl, startPostgres } from "./postgres.js";

/** True when something accepts TCP connections on host:port. */
export const reachable = (host: string, port: number) =>
  new Promise<boolean>((resolve) => {
    const socket = tcpConnect({ host, port, timeout: 500 });
    socket.once("connect", () => (socket.destroy(), resolve(true)));
    socket.once("error", () => resolve(false));
    socket.once("timeout", () => (socket.destroy(), resolve(false)));
  });

const which = (name: string) =>
  [...(process.env.PATH ?? "").split(":"), "/usr/sbin", "/usr/local/sbin"].map((d) => join(d, name)).find((p) => existsSync(p));

export interface Started {
  url: string;
  /** How it came to be, for the summary: "started, data in …", "already running", "not installed …". */
  how: string;
  /** Stops it if the launcher started it. */
  stop(): Promise<void>;
}

export interface ServerSpec {
  name: string;
  envVar: string;
  port: number;
  scheme: string;
  install: string;
  args: (dataDir: string) => string[];
  /** Writes what it needs in its data folder (its configuration) before it starts. */
  prepare?: (dataDir: string) => Promise<void>;
  /** The line that says it is ready. */
  ready: RegExp;
  /** Problem lines worth showing a person. */
  problem: (line: string) => boolean;
  /** What keeps working without it. */
  without: string;
}

const nothingToStop = async () => {};

function stopChild(child: ChildProcess, signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => (child.once("exit", () => resolve()), child.kill(signal)));
}

export async function ensureServer(spec: ServerSpec, root: string, warn: (line: string) => void): Promise<Started> {
  const url = process.env[spec.envVar] ?? `${spec.scheme}://127.0.0.1:${spec.port}`;
  if (process.env[spec.envVar]) return { url, how: `from ${spec.envVar}`, stop: nothingToStop };
  if (await reachable("127.0.0.1", spec.port)) return { url, how: "already running", stop: nothingToStop };
  const bin = which(spec.name);
  if (!bin) {
    warn(`${spec.name} is not installed: ${spec.without}\n  Install it with: sudo apt-get install ${spec.install}   (or set ${spec.envVar})`);
    return { url, how: "not installed", stop: nothingToStop };
  }
  const dataDir = join(root, ".data", spec.name);
  mkdirSync(dataDir, { recursive: true });
  await spec.prepare?.(dataDir);
  // Its own process group: Ctrl-C in the terminal must not stop it before the services have drained.
  const child = spawn(bin, spec.args(dataDir), { stdio: ["ignore", "pipe", "pipe"], detached: true });
  let log = "";
  await new Promise<void>((resolve, reject) => {
    for (const stream of [child.stdout!, child.stderr!]) {
      createInterface({ input: stream }).on("line", (line) => {
        if (log.length < 16_384) log += line + "\n";
        if (spec.ready.test(line)) resolve();
        if (spec.problem(line)) warn(`${spec.name}: ${line}`);
      });
    }
    child.once("exit", (code) => reject(new Error(`${spec.name} exited with code ${code} while starting:\n${log.trim()}`)));
  });
  return { url, how: `started, data in ${dataDir}`, stop: () => stopChild(child) };
}

/** A private PostgreSQL cluster in .data/postgres with one database per service, or undefined (PGlite). */
export async function ensurePostgres(root: string, port: number, databases: readonly string[], warn: (line: string) => void): Promise<(Started & { urlFor(db: string): string }) | undefined> {
  const bin = findPostgresBin();
  if (!bin) {
    warn("PostgreSQL is not installed: each service keeps its database in embedded PGlite under .data/<service> (slower to start, ~300 MiB per service).\n  Install it with: sudo apt-get install postgresql");
    return undefined;
  }
  const dir = join(root, ".data", "postgres");
  const urlFor = (db: string) => postgresUrl(port, db, dir);
  let stop = nothingToStop;
  let how = "already running";
  if (!(await reachable("127.0.0.1", port))) {
    const server = await startPostgres({ bin, dir, port, onLog: (line) => /\b(ERROR|FATAL|PANIC):/.test(line) && warn(`postgres: ${line}`) }).catch((err) => {
      if (!(err instanceof PostgresAccessError)) throw err;
      warn(`${err.message}: each service embeds PGlite instead. Clone into a folder others can read, or run as a user other than root.`);
      return undefined;
    });
    if (!server) return undefined;
    stop = server.stop;
    how = `started, data in ${dir}`;
  }
  await ensureDatabases(urlFor("postgres"), databases);
  return { url: urlFor("postgres"), urlFor, how, stop };
}
