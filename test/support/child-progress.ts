// Waiting on a child process without guessing how long the machine takes: a wait ends when what
// it waits for happens, fails at once when the child exits, and fails when the child has made no
// progress for `stallMs`: no output line, and no CPU time used by it or any process under it (a
// launcher's work is mostly its children's: a compiler, initdb, the services). A slow, busy
// machine makes a wait longer, never failed; `boundMs` is only a safety net for a child that keeps
// busy without ever getting there.
import type { ChildProcess } from "node:child_process";
import { treeCpuTicks } from "../../launcher/proc-stat.js";
import { createInterface } from "node:readline";

export interface WaitOptions {
  /** How long the child may show no progress (default 60 s, as the launcher allows its processes). */
  stallMs?: number;
  /** Safety net over the whole wait (default 5 min). */
  boundMs?: number;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class ChildProgress {
  /** Every line of its stdout and stderr, as they arrived. */
  readonly lines: string[] = [];
  /** When each line arrived (performance.now()). */
  readonly lineTimes: number[] = [];
  readonly exited: Promise<Exit>;
  exit: Exit | undefined;
  private lastLineAt = performance.now();
  private readonly closed: Promise<void>;

  constructor(readonly child: ChildProcess, private readonly defaults: Required<WaitOptions> = { stallMs: 60_000, boundMs: 300_000 }) {
    for (const stream of [child.stdout, child.stderr]) {
      if (!stream) continue;
      createInterface({ input: stream }).on("line", (line) => {
        this.lines.push(line);
        this.lineTimes.push((this.lastLineAt = performance.now()));
      });
    }
    this.exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve((this.exit = { code, signal }))));
    this.closed = new Promise((resolve) => child.once("close", () => resolve()));
  }

  output(): string {
    return this.lines.join("\n");
  }

  /** The index of the first line from `from` on that matches; the index lets a later wait start after it. */
  async waitForLine(match: RegExp, opts: WaitOptions & { from?: number } = {}): Promise<number> {
    let found = -1;
    await this.until(`a line matching ${match}`, () => (found = this.lines.findIndex((line, i) => i >= (opts.from ?? 0) && match.test(line))) >= 0, opts);
    return found;
  }

  /** Resolves once `ready()` says yes (asked every 200 ms). */
  async until(what: string, ready: () => boolean | Promise<boolean>, opts: WaitOptions = {}): Promise<void> {
    await this.wait(what, ready, false, opts);
  }

  /** Resolves with how it exited. */
  async waitForExit(opts: WaitOptions = {}): Promise<Exit> {
    await this.wait("its exit", () => this.exit !== undefined, true, opts);
    return this.exit!;
  }

  private async wait(what: string, ready: () => boolean | Promise<boolean>, exitExpected: boolean, opts: WaitOptions) {
    const { stallMs, boundMs } = { ...this.defaults, ...opts };
    const began = performance.now();
    let progressAt = began;
    let ticks: number | undefined;
    let lastSample = 0;
    for (;;) {
      if (await ready()) return;
      const now = performance.now();
      if (this.exit && !exitExpected) {
        // Its last lines may still be in the pipe (or held open by a process it left behind).
        await Promise.race([this.closed, new Promise((r) => setTimeout(r, 1_000))]);
        if (await ready()) return;
        throw this.failure(`exited (code ${this.exit.code}, signal ${this.exit.signal}) while waiting for ${what}`);
      }
      if (now - lastSample >= 1_000 && this.child.pid) {
        lastSample = now;
        const t = treeCpuTicks(this.child.pid);
        if (t !== undefined && t !== ticks) (ticks = t), (progressAt = now);
      }
      progressAt = Math.max(progressAt, this.lastLineAt);
      if (now - progressAt > stallMs) throw this.failure(`made no progress (no output line, no CPU time) for ${stallMs / 1000} s while waiting for ${what}`);
      if (now - began > boundMs) throw this.failure(`busy but not there after ${boundMs / 1000} s while waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  private failure(why: string): Error {
    return new Error(`${this.child.spawnargs.join(" ")} ${why}; its last output:\n${this.lines.slice(-30).join("\n")}`);
  }
}
