// Runs one process of the mesh and keeps it running, as `restart: on-failure` does in compose and
// the kubelet does for a pod: a crashed process is started again after a back-off that doubles
// (1 s … 30 s) while it keeps crashing before it serves, and starts at 1 s again once it has served; one that crashes at start again and again, or
// exits with a configuration error (78), is left failed with its last log lines for a person.
//
// Start-up is followed by progress, never by one fixed deadline: the process's own log lines
// (migrating, seeding, serving) and the CPU time it uses. It is stalled only when it has done
// neither for `stallMs`, whatever the machine's speed.
//
// A process serves one or more members, each shown as its own line and dashboard row: a service or
// the gateway, or several services in one host (launcher/host.ts), whose log lines carry `service`.
// Each member follows its own phases and health check; the process restarts, fails and stops as
// one, so its members do too.
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

/** What a process serves, as the terminal and the dashboard show it. */
export interface MemberSpec {
  name: string;
  address: string;
  metricsUrl: string;
  /** Its log lines (lines no member claims, such as a crash's stack, go to every member's). */
  logFile: string;
  /** Asked after it logs "serving", until it says yes: is it really answering? */
  healthy(): Promise<boolean>;
}

export interface ProcessSpec {
  /** The process's name: its one member's, or a host's. */
  name: string;
  /** Program and arguments. */
  command: readonly [string, ...string[]];
  cwd: string;
  env: NodeJS.ProcessEnv;
  members: readonly MemberSpec[];
  /** How long a starting process may show no progress (no log line, no CPU time) before it is stalled. */
  stallMs: number;
  /** How long a stopping process may drain before it is killed. */
  drainMs: number;
  /** Delays before restarts after crashes in a row (default BACKOFF_MS). */
  backoffMs?: readonly number[];
}

export interface SupervisorEvents {
  /** A member's state changed; `detail` says why when a person should know (exit code, back-off, stall). */
  state(member: Member, detail?: string): void;
  /** A log line, as the process wrote it: from the member it names, else from the process. */
  line(source: Member | Supervised, line: string): void;
}

/** Log messages that mark start-up phases (see mesh/service.ts). */
const PHASES: Record<string, ProcessState> = { migrating: "migrating", seeding: "seeding" };

/** One member of a supervised process: its state, phases and log. */
export class Member implements ProcessView {
  state: ProcessState = "stopped";
  /** When the latest start began, and when it first served after it. */
  startedAt = 0;
  servedAt = 0;
  private readonly lines: string[] = [];
  private readonly log: WriteStream;

  constructor(readonly spec: MemberSpec, readonly process: Supervised) {
    mkdirSync(dirname(spec.logFile), { recursive: true });
    this.log = createWriteStream(spec.logFile, { flags: "a" });
  }

  get name() { return this.spec.name; }
  get address() { return this.spec.address; }
  get metricsUrl() { return this.spec.metricsUrl; }
  get logFile() { return this.spec.logFile; }
  get restarts() { return this.process.restarts; }
  get pid() { return this.process.pid; }
  recentLogs(): readonly string[] { return this.lines; }

  keep(line: string) {
    // Output may still arrive after the exit that closed the log (the pipes drain later).
    if (!this.log.writableEnded) this.log.write(line + "\n");
    this.lines.push(line);
    if (this.lines.length > KEPT_LINES) this.lines.shift();
  }

  /** Resolves once what was written has reached the file. */
  closeLog(): Promise<void> {
    return new Promise((resolve) => this.log.end(resolve));
  }
}

/** The message and `service` of a pino line; undefined for any other line. */
function logEntry(line: string): { msg?: unknown; service?: unknown } | undefined {
  if (!line.startsWith("{")) return undefined;
  try {
    return JSON.parse(line);
  } catch {
    return undefined;
  }
}

/** From least to most advanced, for a process's overall state. */
const ORDER: ProcessState[] = ["failed", "backing off", "stopped", "stopping", "starting", "migrating", "seeding", "serving"];

/** Not ended yet: a stop marks such a member stopped (a failed one stays failed). */
const notEnded = (state: ProcessState) => state !== "failed" && state !== "stopped";

export class Supervised {
  restarts = 0;
  readonly members: readonly Member[];
  private child: ChildProcess | undefined;
  private crashesInARow = 0;
  private servedOnce = false;
  private wanted = false;
  private progressAt = 0;
  private lastTicks: number | undefined;
  private watch: NodeJS.Timeout | undefined;
  private backoff: NodeJS.Timeout | undefined;

  constructor(readonly spec: ProcessSpec, private readonly events: SupervisorEvents) {
    this.members = spec.members.map((m) => new Member(m, this));
  }

  get name() { return this.spec.name; }
  get pid() { return this.child?.pid; }
  /** Its members' state when they agree, else the least advanced member's. */
  get state(): ProcessState {
    return this.members.reduce((least, m) => (ORDER.indexOf(m.state) < ORDER.indexOf(least) ? m.state : least), this.members[0]!.state);
  }

  start(): void {
    this.wanted = true;
    this.spawn();
  }

  private setState(member: Member, state: ProcessState, detail?: string) {
    if (state === member.state && !detail) return;
    member.state = state;
    this.events.state(member, detail);
  }

  private setAll(state: ProcessState, detail?: string) {
    for (const m of this.members) this.setState(m, state, detail);
  }

  private spawn() {
    const [program, ...args] = this.spec.command;
    // Its own process group, so that Ctrl-C in the terminal reaches only the launcher, which then
    // stops everything in order. stdin stays a pipe: its end tells the process the launcher is gone.
    const child = spawn(program, args, { cwd: this.spec.cwd, env: this.spec.env, stdio: ["pipe", "pipe", "pipe"], detached: true });
    this.child = child;
    this.servedOnce = false;
    this.progressAt = Date.now();
    this.lastTicks = undefined;
    for (const m of this.members) {
      m.startedAt = Date.now();
      m.servedAt = 0;
    }
    this.setAll("starting");
    for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on("line", (line) => this.onLine(line));
    child.once("error", (err) => this.onLine(`could not start: ${err.message}`));
    child.once("exit", (code, signal) => this.onExit(child, code, signal));
    this.watch = setInterval(() => this.checkProgress(), 1_000);
  }

  private onLine(line: string) {
    this.progressAt = Date.now();
    const entry = logEntry(line);
    const named = this.members.length === 1 ? this.members[0] : this.members.find((m) => m.name === entry?.service);
    for (const m of named ? [named] : this.members) m.keep(line);
    this.events.line(named ?? this, line);
    if (!named || named.state === "serving" || named.state === "stopping" || typeof entry?.msg !== "string") return;
    const phase = PHASES[entry.msg];
    if (phase) this.setState(named, phase);
    if (entry.msg === "serving") void this.confirmServing(named, this.child);
  }

  /** "serving" is logged once it listens; the health check says it answers. */
  private async confirmServing(member: Member, child: ChildProcess | undefined) {
    const current = () => this.child === child && child?.exitCode === null && this.wanted;
    while (current()) {
      // Each question gets its own deadline: one answer that never comes must not stop the asking.
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), HEALTH_QUESTION_MS)));
      const healthy = await Promise.race([member.spec.healthy().catch(() => false), timeout]);
      clearTimeout(timer);
      if (healthy) {
        if (!current()) return;
        member.servedAt = Date.now();
        if (this.members.every((m) => m === member || m.state === "serving")) {
          this.servedOnce = true;
          this.crashesInARow = 0;
        }
        return this.setState(member, "serving");
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  private checkProgress() {
    const waiting = this.members.filter((m) => m.state !== "serving" && m.state !== "stopping");
    if (waiting.length === 0 || !this.child?.pid) return;
    const ticks = cpuTicks(this.child.pid);
    if (ticks !== undefined && ticks !== this.lastTicks) {
      this.lastTicks = ticks;
      this.progressAt = Date.now();
    }
    if (Date.now() - this.progressAt > this.spec.stallMs) {
      this.progressAt = Date.now(); // say it once per stall period
      for (const m of waiting) this.events.state(m, `stalled: no log line and no CPU time for ${Math.round(this.spec.stallMs / 1000)} s while ${m.state}`);
    }
  }

  private onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null) {
    if (child !== this.child) return;
    clearInterval(this.watch);
    this.child = undefined;
    const how = signal ? `killed by ${signal}` : `exit code ${code}`;
    if (!this.wanted) return this.setAll("stopped", how);
    if (code === EX_CONFIG) return this.failOnConfig(how);
    this.crashesInARow = this.servedOnce ? 1 : this.crashesInARow + 1;
    if (this.crashesInARow >= MAX_START_CRASHES) return this.fail(`crashed ${this.crashesInARow} times in a row before serving (${how})`);
    const backoff = this.spec.backoffMs ?? BACKOFF_MS;
    const delay = backoff[Math.min(this.crashesInARow - 1, backoff.length - 1)]!;
    this.setAll("backing off", `${how}; restarting in ${delay / 1000} s`);
    this.backoff = setTimeout(() => {
      if (!this.wanted) return;
      this.restarts++;
      this.spawn();
    }, delay);
  }

  /** A host names the service whose configuration is wrong (launcher/host.ts): that one fails first. */
  private failOnConfig(how: string) {
    const said = this.members[0]!.recentLogs().findLast((l) => l.includes("configuration error: "));
    const culprit = this.members.find((m) => said?.includes(`configuration error: ${m.name}: `)) ?? this.members[0]!;
    this.wanted = false;
    this.setState(culprit, "failed", `configuration error (${how})`);
    for (const m of this.members) if (m !== culprit) this.setState(m, "failed", `stopped with ${culprit.name}'s configuration error`);
  }

  private fail(why: string) {
    this.wanted = false;
    this.setAll("failed", why);
  }

  /** Drains the process (SIGTERM), killing it after drainMs; resolves once it has exited. */
  async stop(): Promise<void> {
    this.wanted = false;
    clearTimeout(this.backoff);
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) {
      for (const m of this.members) if (notEnded(m.state)) this.setState(m, "stopped");
      await Promise.all(this.members.map((m) => m.closeLog()));
      return;
    }
    for (const m of this.members) this.setState(m, "stopping");
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const closed = new Promise((resolve) => child.once("close", resolve));
    child.kill("SIGTERM");
    const force = setTimeout(() => child.kill("SIGKILL"), this.spec.drainMs);
    await exited;
    clearTimeout(force);
    // The lines it wrote last may still be in its pipes when it exits: read them before the log
    // closes (not for ever: a process it started could hold the pipes open).
    await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 1_000).unref())]);
    await Promise.all(this.members.map((m) => m.closeLog()));
  }

  /** Kills it at once (a second Ctrl-C). */
  kill(): void {
    this.wanted = false;
    clearTimeout(this.backoff);
    this.child?.kill("SIGKILL");
  }
}
