// Runs load generator jobs and reads every watched process over each job's measured window: CPU
// seconds used in it, and the highest resident memory seen while load runs (read each second).
import type { LoadGenerator } from "./children.js";
import type { Job, ResultOf } from "./jobs.js";
import { cpuBetween, machineCpuSeconds, memory, usage, type Usage, type Watched } from "./proc.js";

export interface Measured<J extends Job> {
  result: ResultOf<J>;
  /** CPU seconds each process used over the window. */
  cpu: Record<string, number>;
  windowSeconds: number;
  /** Cores busy with anything not watched (other work on the machine) over the window: the noise. */
  otherCores: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Measurer {
  /** Highest RSS (MiB) seen per process while a window was open, and the highest PSS read at those peaks. */
  readonly peakRssMiB: Record<string, number> = {};
  readonly peakPssMiB: Record<string, number> = {};

  constructor(
    private readonly loadgen: LoadGenerator,
    /** Every process to read, by name; read anew each time (a restarted process has a new pid). */
    private readonly watched: () => Record<string, Watched>,
    /** The names whose CPU is the mesh's (not the load generator's, the baseline's or the harness's). */
    readonly meshNames: readonly string[],
  ) {}

  now(): Record<string, Usage> {
    return usage(this.watched());
  }

  memory(withPss?: Parameters<typeof memory>[1]): ReturnType<typeof memory> {
    return memory(this.watched(), withPss);
  }

  async run<J extends Job>(job: J): Promise<Measured<J>> {
    let before: Record<string, Usage> | undefined;
    let after: Record<string, Usage> | undefined;
    let machine = 0;
    let began = 0;
    let ended = 0;
    let sampler: NodeJS.Timeout | undefined;
    // RSS once a second; PSS only when a process's RSS reaches a new peak, which after the first
    // seconds is rare: reading PSS for every process each second cost the harness 1-3 % of a core
    // under mixed load, CPU the mesh under test then lacked.
    const sample = () => {
      const atPeak = (name: string, rssMiB: number) => rssMiB > (this.peakRssMiB[name] ?? 0);
      for (const [name, { rssMiB, pssMiB }] of Object.entries(this.memory(atPeak))) {
        this.peakRssMiB[name] = Math.max(this.peakRssMiB[name] ?? 0, rssMiB);
        if (!Number.isNaN(pssMiB)) this.peakPssMiB[name] = Math.max(this.peakPssMiB[name] ?? 0, pssMiB);
      }
    };
    try {
      const result = await this.loadgen.run(job, {
        start: () => {
          before = this.now();
          machine = machineCpuSeconds();
          began = performance.now();
          sampler = setInterval(sample, 1_000);
        },
        end: () => {
          after = this.now();
          machine = machineCpuSeconds() - machine;
          ended = performance.now();
          clearInterval(sampler);
        },
      });
      if (!before || !after) throw new Error(`the ${job.kind} job reported no measured window`);
      const cpu = cpuBetween(before, after);
      const windowSeconds = (ended - began) / 1000;
      const watched = Object.values(cpu).reduce((a, b) => a + b, 0);
      return { result, cpu, windowSeconds, otherCores: Math.max(0, machine - watched) / windowSeconds };
    } finally {
      clearInterval(sampler);
    }
  }

  /** CPU the mesh uses right now, in cores, over `ms`. */
  async meshCores(ms = 1_000): Promise<number> {
    const before = this.now();
    await sleep(ms);
    const used = cpuBetween(before, this.now());
    return this.meshNames.reduce((n, name) => n + (used[name] ?? 0), 0) / (ms / 1000);
  }

  /**
   * Waits until the mesh is quiet (below `cores` of CPU over a second): the backlog of the last
   * step (orders still in the saga, outboxes) must not be measured as the next step's. Gives up
   * after `boundMs`, saying so.
   */
  async settle(cores: number, boundMs = 60_000): Promise<void> {
    const end = performance.now() + boundMs;
    let busy = Infinity;
    while ((busy = await this.meshCores()) > cores) {
      if (performance.now() > end) return void console.log(`  (the mesh still used ${busy.toFixed(2)} cores after ${boundMs / 1000} s; going on)`);
    }
  }
}
