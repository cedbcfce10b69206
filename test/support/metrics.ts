// A process's Prometheus figures, read from its metrics port as Prometheus would.
/** The value of `name` with these labels (others may be there too): 0 when the series is absent. */
export async function metricValue(metricsPort: number, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    const match = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (match?.[1] === name && wanted.every((l) => (match[2] ?? "").split(",").includes(l))) return Number(match[3]);
  }
  return 0;
}
