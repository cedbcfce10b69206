// The local dashboard the launcher serves (http://127.0.0.1:8081 by default): processes, events,
// backlogs, dead letters (with replay) and traces, from the launcher's MeshView, NATS (as the
// operator) and each process's /metrics. It is also the mesh's OTLP/HTTP trace receiver:
// processes started with OTEL_EXPORTER_OTLP_ENDPOINT=<its URL> post their spans to /v1/traces.
//
// It is meant for this machine only: it answers only requests addressed to a loopback name (so a
// web page cannot reach it through DNS rebinding), refuses posts from other origins (so a page
// cannot replay dead letters or inject spans), and forbids framing.
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { gunzipSync } from "node:zlib";
import type { MeshView } from "../view.js";
import { watchEvents, type EventWatch } from "./event-watch.js";
import { outboxBacklog } from "./outbox-backlog.js";
import { spansFromOtlpJson, TraceStore } from "./otlp-traces.js";
import { fragments, page, scriptHash, type ProcessRow, type Snapshot } from "./page.js";

export interface DashboardOptions {
  view: MeshView;
  host?: string;
  /** 0 picks a free port. */
  port?: number;
  /** Traces kept in memory (the oldest go first). */
  maxTraces?: number;
  /** Largest OTLP request accepted, before and after gunzip. */
  maxBodyBytes?: number;
  /** The window of the per-subject rates, in seconds. */
  rateWindowSeconds?: number;
}

export interface Dashboard {
  port: number;
  /** Where to open it; also the OTEL_EXPORTER_OTLP_ENDPOINT for the processes. */
  url: string;
  traces: TraceStore;
  stop(): Promise<void>;
}

const TRACE_ID = /^[0-9a-f]{32}$/;

class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message);
  }
}

/** Reads a body up to `limit` bytes; a larger one is refused as soon as it passes the limit. */
async function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  if (Number(req.headers["content-length"] ?? 0) > limit) throw new HttpError(413, `body over ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, `body over ${limit} bytes`);
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

export async function startDashboard(opts: DashboardOptions): Promise<Dashboard> {
  const { view, host = "127.0.0.1", maxBodyBytes = 4 * 1024 * 1024, rateWindowSeconds = 10 } = opts;
  const traces = new TraceStore(opts.maxTraces ?? 200);
  const events: EventWatch = watchEvents({ natsUrl: view.natsUrl, certsDir: view.certsDir, windowSeconds: rateWindowSeconds });

  // What costs a request to each process and to JetStream is gathered at most once a second,
  // however many tabs poll.
  let slow: { at: number; value: Promise<Pick<Snapshot, "processes" | "lag" | "deadLetters">> } | undefined;
  const gatherSlow = async () => {
    const processes = view.processes();
    const [backlogs, lag, deadLetters] = await Promise.all([
      Promise.all(processes.map((p) => outboxBacklog(p.metricsUrl))),
      events.lag(),
      events.deadLetters().catch(() => []),
    ]);
    const rows: ProcessRow[] = processes.map((p, i) => ({
      name: p.name, state: p.state, restarts: p.restarts, pid: p.pid, address: p.address, metricsUrl: p.metricsUrl,
      logs: p.recentLogs().slice(-10), backlog: backlogs[i]!,
    }));
    return { processes: rows, lag, deadLetters };
  };
  const snapshot = async (traceId: string | null): Promise<Snapshot> => {
    if (!slow || Date.now() - slow.at > 1_000) slow = { at: Date.now(), value: gatherSlow() };
    const selected = traceId && TRACE_ID.test(traceId) ? traceId : undefined;
    return {
      ...(await slow.value),
      gatewayUrl: view.gatewayUrl,
      natsStatus: events.status(),
      windowSeconds: rateWindowSeconds,
      rates: events.rates(),
      recent: events.recent(),
      traces: traces.list(50),
      trace: selected ? (traces.get(selected) ?? "missing") : undefined,
    };
  };

  const sendJson = (res: ServerResponse, status: number, body: unknown) =>
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" }).end(JSON.stringify(body));

  const receiveTraces = async (req: IncomingMessage, res: ServerResponse) => {
    const type = String(req.headers["content-type"] ?? "");
    if (!/^application\/json\b/i.test(type)) {
      throw new HttpError(415, "this receiver takes OTLP/HTTP JSON (application/json), as @opentelemetry/exporter-trace-otlp-http sends it");
    }
    let body = await readBody(req, maxBodyBytes);
    const encoding = String(req.headers["content-encoding"] ?? "identity").toLowerCase();
    if (encoding === "gzip") {
      try {
        body = gunzipSync(body, { maxOutputLength: maxBodyBytes });
      } catch (err) {
        throw new HttpError((err as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE" ? 413 : 400, `gzip body: ${(err as Error).message}`);
      }
    } else if (encoding !== "identity") throw new HttpError(415, `content-encoding ${encoding} is not supported (gzip is)`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch (err) {
      throw new HttpError(400, `not JSON: ${(err as Error).message}`);
    }
    try {
      traces.add(spansFromOtlpJson(parsed));
    } catch (err) {
      throw new HttpError(400, (err as Error).message);
    }
    sendJson(res, 200, {}); // an ExportTraceServiceResponse without partial_success: all accepted
  };

  const replay = async (req: IncomingMessage, res: ServerResponse, seq: number) => {
    let replayed: boolean;
    try {
      replayed = await events.replay(seq);
    } catch (err) {
      throw new HttpError(503, (err as Error).message);
    }
    slow = undefined; // the next refresh shows the DLQ without it
    if (!replayed) throw new HttpError(404, `no dead letter #${seq}`);
    // A form posted without script comes back to the page; script asks for JSON.
    if (!String(req.headers.accept ?? "").includes("application/json")) res.writeHead(303, { location: "/#dead-letters" }).end();
    else sendJson(res, 200, { replayed: seq });
  };

  const route = async (req: IncomingMessage, res: ServerResponse, url: URL) => {
    const { pathname } = url;
    const get = req.method === "GET" || req.method === "HEAD";
    if (req.method === "POST") {
      if (pathname === "/v1/traces") return receiveTraces(req, res);
      const replayMatch = /^\/api\/dead-letters\/(\d{1,15})\/replay$/.exec(pathname);
      if (replayMatch) return replay(req, res, Number(replayMatch[1]));
    }
    if (get && pathname === "/") {
      const html = page(await snapshot(url.searchParams.get("trace")));
      res.writeHead(200, {
        "content-type": "text/html; charset=utf-8",
        "cache-control": "no-store",
        "content-security-policy": `default-src 'none'; script-src '${scriptHash}'; style-src 'unsafe-inline'; connect-src 'self'; form-action 'self'; img-src 'self'; base-uri 'none'; frame-ancestors 'none'`,
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
      });
      return res.end(html);
    }
    if (get && pathname === "/parts") return sendJson(res, 200, fragments(await snapshot(url.searchParams.get("trace"))));
    if (get && pathname === "/api/services") {
      const s = await snapshot(null);
      return sendJson(res, 200, s.processes);
    }
    if (get && pathname === "/api/events") {
      return sendJson(res, 200, { status: events.status() ?? "connected", windowSeconds: rateWindowSeconds, subjects: events.rates(), recent: events.recent() });
    }
    if (get && pathname === "/api/backlog") {
      const s = await snapshot(null);
      return sendJson(res, 200, s.processes.map((p) => ({ name: p.name, outbox: p.backlog, consumers: s.lag.filter((l) => l.service === p.name) })));
    }
    if (get && pathname === "/api/dead-letters") return sendJson(res, 200, await events.deadLetters());
    if (get && pathname === "/api/traces") return sendJson(res, 200, traces.list(200));
    const traceMatch = /^\/api\/traces\/([0-9a-f]{32})$/.exec(pathname);
    if (get && traceMatch) {
      const detail = traces.get(traceMatch[1]!);
      return detail ? sendJson(res, 200, detail) : sendJson(res, 404, { error: "no such trace" });
    }
    if (get && pathname === "/favicon.ico") return res.writeHead(204).end();
    throw new HttpError(get || req.method === "POST" ? 404 : 405, `no route for ${req.method} ${pathname}`);
  };

  let allowedHosts = new Set<string>();
  const server = createServer((req, res) => {
    res.setHeader("x-frame-options", "DENY");
    const hostHeader = String(req.headers.host ?? "");
    if (!allowedHosts.has(hostHeader.toLowerCase())) return sendJson(res, 421, { error: "this dashboard answers only at its loopback address" });
    const origin = req.headers.origin;
    if (req.method === "POST" && origin !== undefined && origin !== `http://${hostHeader}`) {
      return sendJson(res, 403, { error: "cross-origin posts are refused" });
    }
    route(req, res, new URL(req.url ?? "/", "http://dashboard.invalid")).catch((err) => {
      const status = err instanceof HttpError ? err.status : 500;
      if (res.headersSent) return void res.destroy();
      if (status === 413) res.setHeader("connection", "close"); // the rest of the body is not read
      sendJson(res, status, { error: (err as Error).message });
    });
  });
  await new Promise<void>((resolve, reject) => server.once("error", reject).listen(opts.port ?? 8081, host, () => resolve()));
  const port = (server.address() as { port: number }).port;
  allowedHosts = new Set([host, "127.0.0.1", "localhost", "[::1]"].map((h) => `${h.includes(":") && !h.startsWith("[") ? `[${h}]` : h}:${port}`.toLowerCase()));
  const urlHost = host.includes(":") ? `[${host}]` : host;
  return {
    port,
    url: `http://${urlHost}:${port}`,
    traces,
    async stop() {
      const closed = new Promise((resolve) => server.close(resolve));
      server.closeAllConnections();
      await Promise.all([closed, events.stop()]);
    },
  };
}
