// One line per service (and the gateway) while the mesh starts: its state and how long it has been starting. In a
// terminal the lines are redrawn in place; in a log (CI, a pipe) each change is printed once.
import type { Member } from "./supervisor.js";

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

export function describe(p: Member, now = Date.now()): string {
  const restarted = p.restarts ? `  (restarted ×${p.restarts})` : "";
  const when = p.state === "serving" ? `after ${seconds(p.servedAt - p.startedAt)}` : p.state === "failed" || p.state === "stopped" ? "" : seconds(now - p.startedAt);
  return `  ${p.name.padEnd(13)} ${p.state.padEnd(12)} ${when}${restarted}`;
}

export class StartProgress {
  private drawn = 0;
  private printed = new Map<string, string>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly processes: readonly Member[], private readonly out: NodeJS.WriteStream = process.stdout) {
    if (out.isTTY) this.timer = setInterval(() => this.draw(), 500);
  }

  /** Call when a state changed. */
  update(): void {
    if (this.out.isTTY) return this.draw();
    for (const p of this.processes) {
      if (!p.startedAt || this.printed.get(p.name) === p.state) continue;
      this.printed.set(p.name, p.state);
      this.out.write(describe(p) + "\n");
    }
  }

  /** Prints a message above the lines (a warning, a crash). */
  say(text: string): void {
    if (this.out.isTTY) this.erase();
    this.out.write(text.endsWith("\n") ? text : text + "\n");
    if (this.out.isTTY) this.draw();
  }

  /** Leaves the lines as they are and stops redrawing them. */
  end(): void {
    clearInterval(this.timer);
    if (this.out.isTTY) this.draw();
    this.drawn = 0;
  }

  private erase() {
    if (this.drawn) this.out.write(`\x1b[${this.drawn}A\x1b[0J`);
    this.drawn = 0;
  }

  private draw() {
    this.erase();
    const now = Date.now();
    this.out.write(this.processes.map((p) => describe(p, now)).join("\n") + "\n");
    this.drawn = this.processes.length;
  }
}
