// Each service's outbox backlog, read from its own /metrics (outbox_pending_events, counted by the
// service when scraped: mesh/events/outbox.ts). Only this one metric is parsed.

/** The value of an unlabelled-or-labelled sample of `name` in a Prometheus text exposition. */
export function sampleValue(exposition: string, name: string): number | undefined {
  for (const line of exposition.split("\n")) {
    if (!line.startsWith(name)) continue;
    const match = /^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match?.[1] === name) {
      const value = Number(match[3]);
      return Number.isNaN(value) ? undefined : value;
    }
  }
  return undefined;
}

/** A process's backlog: a number, "none" when it has no outbox (the gateway), or why it could not be read. */
export type Backlog = number | "none" | { unreachable: string };

export async function outboxBacklog(metricsUrl: string, timeoutMs = 1_500): Promise<Backlog> {
  try {
    const res = await fetch(metricsUrl, { signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) return { unreachable: `HTTP ${res.status}` };
    return sampleValue(await res.text(), "outbox_pending_events") ?? "none";
  } catch (err) {
    return { unreachable: (err as Error).name === "TimeoutError" ? "no answer" : "not listening" };
  }
}
