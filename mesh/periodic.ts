// Periodic jobs of a service (sweeps, purges). A job runs every `intervalMs`, never overlapping
// itself; a failure is logged and the job runs again at the next tick. Each replica runs its own
// jobs, so a job must be safe to run concurrently with itself elsewhere (guarded UPDATEs,
// FOR UPDATE SKIP LOCKED), and keep its transactions short: with embedded PGlite a transaction
// holds up every other query of the service.
import type { Logger } from "./telemetry.js";

export interface PeriodicJob {
  /** Stops the timer and waits for a run in progress. */
  stop(): Promise<void>;
}

export function startPeriodic(name: string, intervalMs: number, job: () => Promise<unknown>, logger: Logger): PeriodicJob {
  let stopped = false;
  let running: Promise<void> = Promise.resolve();
  let failing = false;
  const tick = () => {
    running = (async () => {
      try {
        await job();
        if (failing) logger.info({ job: name }, "periodic job succeeds again");
        failing = false;
      } catch (err) {
        if (!failing) logger.error({ err, job: name }, "periodic job failed; it runs again at the next tick");
        failing = true;
      }
    })();
    void running.then(() => {
      if (!stopped) timer = setTimeout(tick, intervalMs);
    });
  };
  let timer = setTimeout(tick, intervalMs);
  return {
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running;
    },
  };
}
