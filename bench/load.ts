// A closed-loop load generator: `concurrency` callers each issue the next call as soon as the
// last one returns, for `durationMs` after a warm-up. Reports throughput and latency percentiles.
export interface LoadResult {
  calls: number;
  errors: number;
  perSecond: number;
  p50Ms: number;
  p99Ms: number;
  /** Process CPU time (user + system) per call, in microseconds: steadier than throughput on a busy machine. */
  cpuUsPerCall: number;
}

export async function closedLoop(call: () => Promise<unknown>, opts: { concurrency: number; durationMs: number; warmupMs: number }): Promise<LoadResult> {
  const run = async (ms: number, record: boolean) => {
    const latencies: number[] = [];
    let errors = 0;
    const end = performance.now() + ms;
    const worker = async () => {
      while (performance.now() < end) {
        const start = performance.now();
        try {
          await call();
          if (record) latencies.push(performance.now() - start);
        } catch {
          errors++;
        }
      }
    };
    const started = performance.now();
    await Promise.all(Array.from({ length: opts.concurrency }, worker));
    return { latencies, errors, elapsed: performance.now() - started };
  };
  await run(opts.warmupMs, false);
  const cpu = process.cpuUsage();
  const { latencies, errors, elapsed } = await run(opts.durationMs, true);
  const used = process.cpuUsage(cpu);
  latencies.sort((a, b) => a - b);
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor(p * latencies.length))] ?? NaN;
  return { calls: latencies.length, errors, perSecond: latencies.length / (elapsed / 1000), p50Ms: pct(0.5), p99Ms: pct(0.99), cpuUsPerCall: (used.user + used.system) / latencies.length };
}
