// Latency percentiles and failure tallies, as the load generator reports them.
import type { Failures, Latency } from "./jobs.js";

export function latencyOf(ms: number[]): Latency {
  const sorted = [...ms].sort((a, b) => a - b);
  const pct = (p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? NaN;
  return { count: sorted.length, p50: pct(0.5), p90: pct(0.9), p99: pct(0.99), max: sorted.at(-1) ?? NaN };
}

/** Counts failures by reason; reasons past the first 20 distinct ones are counted as "other". */
export class FailureTally {
  readonly counts: Failures = {};
  total = 0;
  private distinct = 0;

  add(reason: string): void {
    this.total++;
    const key = reason.slice(0, 160);
    if (!(key in this.counts) && this.distinct++ >= 20) return void (this.counts.other = (this.counts.other ?? 0) + 1);
    this.counts[key] = (this.counts[key] ?? 0) + 1;
  }
}

/** "3× HTTP 503: …; 1× ECONNRESET", the most frequent first, at most `n` reasons. */
export function describeFailures(failures: Failures, n = 3): string {
  const entries = Object.entries(failures).sort((a, b) => b[1] - a[1]);
  const shown = entries.slice(0, n).map(([reason, count]) => `${count}× ${reason}`);
  return entries.length > n ? `${shown.join("; ")}; …` : shown.join("; ");
}
