// Runs one process of the mesh and keeps it running, as `restart: on-failure` does in compose and
// the kubelet does for a pod: a crashed process is started again after a back-off that doubles
// (1 s … 30 s) while it keeps crashing before it serves, and starts at 1 s again once it has served; one that crashes at start again and again, or
// exits with a configuration error (78), is left failed with its last log lines for a person.
//
// Start-up is followed by progress, never by one fixed deadline: the process's own log lines
// (migrating, seeding, serving) and the CPU time it uses. It is stalled only when it has done
// neither for `stallMs`, whatever the machine's speed.
import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdirSync, type WriteStream } from "node:fs";
import { dirname } from "node:path";
import { createInterface } from "node:readline";
import { cpuTicks } from "./proc-stat.js";
import type { ProcessState, ProcessView } from "./view.js";

export const BACKOFF_MS = [1_000, 2_000, 4_000, 8_000, 16_000, 30_000];
/** Crashes in a row before serving, after which a process is left failed. */
export const MAX_START_CRASHES = 5;
const EX_CONFIG = 78;
const KEPT_LINES = 200;
const HEALTH_QUESTION_MS = 5_000;

export interface ProcessSpec {
  name: string;
  /** Program and arguments. */
  command: readonly [string, ...string[]];
  cwd: string;
  env: NodeJS.ProcessEnv;
  address: string;
  metricsUrl: string;
  logFile: string;
  /** Asked after the process logs "serving", until it says yes: is it really answering? */
  healthy(): Promise<boolean>;
  /** How long a starting process may show no progress (no log line, no CPU time) before it is stalled. */
  stallMs: number;
  /** How long a stopping process may drain before it is killed. */
  drainMs: number;
  /** Delays before restarts after crashes in a row (default BACKOFF_MS). */
  backoffMs?: readonly number[];
}

export interface SupervisorEvents {
  /** The state changed; `detail` says why when a person should know (exit code, back-off, stall). */
  state(process: Supervised, detail?: string): void;
  /** A log line, as the process wrote it. */
  line(process: Supervised, line: string): void;
}

/** Log messages that mark start-up phases (see mesh/service.ts). */
const PHASES: Record<string, ProcessState> = { migrating: "migrating", seeding: "seeding" };

export class Supervised implements ProcessView {
  state: ProcessState = "stopped";
  restarts = 0;
  /** When the latest start began, and when it first served after it. */
  startedAt = 0;
  servedAt = 0;
  private child: ChildProcess | undefined;
  private readonly lines: string[] = [];
  private readonly log: WriteStream;
  private crashesInARow = 0;
  private wanted = false;
  private progressAt = 0;
  private lastTicks: number | undefined;
  private watch: NodeJS.Timeout | undefined;
  private backoff: NodeJS.Timeout | undefined;

  constructor(readonly spec: ProcessSpec, private readonly events: SupervisorEvents) {
    mkdirSync(dirname(spec.logFile), { recursive: true });
    this.log = createWriteStream(spec.logFile, { flags: "a" });
  }

  get name() { return this.spec.name; }
  get address() { return this.spec.address; }
  get metricsUrl() { return this.spec.metricsUrl; }
  get logFile() { return this.spec.logFile; }
  get pid() { return this.child?.pid; }
  recentLogs(): readonly string[] { return this.lines; }

  start(): void {
    this.wanted = true;
    this.spawn();
  }

  private setState(state: ProcessState, detail?: string) {
    if (state === this.state && !detail) return;
    this.state = state;
    this.events.state(this, detail);
  }

  private spawn() {
    const [program, ...args] = this.spec.command;
    // Its own process group, so that Ctrl-C in the terminal reaches only the launcher, which then
    // stops everything in order. stdin stays a pipe: its end tells the process the launcher is gone.
    const child = spawn(program, args, { cwd: this.spec.cwd, env: this.spec.env, stdio: ["pipe", "pipe", "pipe"], detached: true });
    this.child = child;
    this.startedAt = Date.now();
    this.servedAt = 0;
    this.progressAt = Date.now();
    this.lastTicks = undefined;
    this.setState("starting");
    for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on("line", (line) => this.onLine(line));
    child.once("error", (err) => this.onLine(`could not start: ${err.message}`));
    child.once("exit", (code, signal) => this.onExit(child, code, signal));
    this.watch = setInterval(() => this.checkProgress(), 1_000);
  }

  private onLine(line: string) {
    // Output may still arrive after the exit that closed the log (the pipes drain later).
    if (!this.log.writableEnded) this.log.write(line + "\n");
    this.lines.push(line);
    if (this.lines.length > KEPT_LINES) this.lines.shift();
    this.progressAt = Date.now();
    this.events.line(this, line);
    if (this.state === "serving" || this.state === "stopping" || !line.startsWith("{")) return;
    let msg: unknown;
    try {
      msg = JSON.parse(line).msg;
    } catch {
      return;
    }
    if (typeof msg !== "string") return;
    const phase = PHASES[msg];
    if (phase) this.setState(phase);
    if (msg === "serving") void this.confirmServing(this.child);
  }

  /** "serving" is logged once it listens; the health check says it answers. */
  private async confirmServing(child: ChildProcess | undefined) {
    const current = () => this.child === child && child?.exitCode === null && this.wanted;
    while (current()) {
      // Each question gets its own deadline: one answer that never comes must not stop the asking.
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), HEALTH_QUESTION_MS)));
      const healthy = await Promise.race([this.spec.healthy().catch(() => false), timeout]);
      clearTimeout(timer);
      if (healthy) {
        if (!current()) return;
        this.servedAt = Date.now();
        this.crashesInARow = 0;
        return this.setState("serving");
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  private checkProgress() {
    if (this.state === "serving" || this.state === "stopping" || !this.child?.pid) return;
    const ticks = cpuTicks(this.child.pid);
    if (ticks !== undefined && ticks !== this.lastTicks) {
      this.lastTicks = ticks;
      this.progressAt = Date.now();
    }
    if (Date.now() - this.progressAt > this.spec.stallMs) {
      this.progressAt = Date.now(); // say it once per stall period
      this.events.state(this, `stalled: no log line and no CPU time for ${Math.round(this.spec.stallMs / 1000)} s while ${this.state}`);
    }
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null) {
    if (child !== this.child) return;
    clearInterval(this.watch);
    this.child = undefined;
    const how = signal ? `killed by ${signal}` : `exit code ${code}`;
    if (!this.wanted) return this.setState("stopped", how);
    if (code === EX_CONFIG) return this.fail(`configuration error (${how})`);
    this.crashesInARow = this.servedAt ? 1 : this.crashesInARow + 1;
    if (this.crashesInARow >= MAX_START_CRASHES) return this.fail(`crashed ${this.crashesInARow} times in a row before serving (${how})`);
    const backoff = this.spec.backoffMs ?? BACKOFF_MS;
    const delay = backoff[Math.min(this.crashesInARow - 1, backoff.length - 1)]!;
    this.setState("backing off", `${how}; restarting in ${delay / 1000} s`);
    this.backoff = setTimeout(() => {
      if (!this.wanted) return;
      this.restarts++;
      this.spawn();
    }, delay);
  }

  private fail(why: string) {
    this.wanted = false;
    this.setState("failed", why);
  }

  /** Drains the process (SIGTERM), killing it after drainMs; resolves once it has exited. */
  async stop(): Promise<void> {
    this.wanted = false;
    clearTimeout(this.backoff);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      if (this.state !== "failed") this.setState("stopped");
      this.log.end();
      return;
    }
    this.setState("stopping");
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const force = setTimeout(() => child.kill("SIGKILL"), this.spec.drainMs);
    await exited;
    clearTimeout(force);
    this.log.end();
  }

  /** Kills it at once (a second Ctrl-C). */
  kill(): void {
    this.wanted = false;
    clearTimeout(this.backoff);
    this.child?.kill("SIGKILL");
  }
}
