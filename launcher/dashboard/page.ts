// The dashboard's HTML: one server-rendered page whose sections a few lines of inline script
// replace every two seconds with fresh fragments from /parts (rendered here too, so all escaping
// lives in one place). No build step, no framework; without script the page still shows a
// snapshot and the replay buttons still post.
import { createHash } from "node:crypto";
import type { DeadLetter } from "../../mesh/events/dead-letters.js";
import type { ProcessState } from "../view.js";
import type { ConsumerLag, SeenEvent, SubjectRate } from "./event-watch.js";
import type { Backlog } from "./outbox-backlog.js";
import type { TraceDetail, TraceSummary } from "./otlp-traces.js";

export interface ProcessRow {
  name: string;
  state: ProcessState;
  restarts: number;
  pid: number | undefined;
  address: string;
  metricsUrl: string;
  logs: readonly string[];
  backlog: Backlog;
}

export interface Snapshot {
  processes: ProcessRow[];
  gatewayUrl: string;
  /** Why events cannot be shown, or undefined when NATS is connected. */
  natsStatus?: string;
  windowSeconds: number;
  rates: SubjectRate[];
  recent: SeenEvent[];
  lag: ConsumerLag[];
  deadLetters: DeadLetter[];
  traces: TraceSummary[];
  /** The trace chosen with ?trace=<id>, or "missing" when it is not (or no longer) in the store. */
  trace?: TraceDetail | "missing";
}

export const SECTIONS = ["services", "events", "backlog", "dead-letters", "traces", "trace"] as const;
export type Section = (typeof SECTIONS)[number];

const ESCAPES: Record<string, string> = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
/** Every text and attribute value goes through this. */
export const esc = (value: unknown): string => String(value ?? "").replace(/[&<>"']/g, (c) => ESCAPES[c]!);

/** Only http(s) URLs become links; anything else is shown as text. */
const link = (url: string, label = url) => (/^https?:\/\//i.test(url) ? `<a href="${esc(url)}" target="_blank" rel="noopener">${esc(label)}</a>` : esc(label));
const traceLink = (traceId: string, label = traceId.slice(0, 12)) =>
  /^[0-9a-f]{32}$/.test(traceId) ? `<a class="trace-link" href="?trace=${traceId}#trace" data-trace="${traceId}" title="${traceId}">${esc(label)}</a>` : "";

/** A stable colour per service name. */
const hue = (name: string) => [...name].reduce((h, c) => (h * 31 + c.charCodeAt(0)) % 360, 7);
const serviceBadge = (name: string) => `<span class="svc" style="--h:${hue(name)}">${esc(name)}</span>`;

export function duration(ms: number): string {
  if (ms < 1) return `${ms.toFixed(2)} ms`;
  if (ms < 1_000) return `${Math.round(ms)} ms`;
  return `${(ms / 1_000).toFixed(ms < 10_000 ? 2 : 1)} s`;
}
const clock = (date: Date) => date.toISOString().slice(11, 19);

const STATE_CLASS: Record<ProcessState, string> = {
  serving: "ok", starting: "busy", migrating: "busy", seeding: "busy", "backing off": "bad", failed: "bad", stopping: "idle", stopped: "idle",
};
const LEVELS: Record<number, string> = { 10: "trace", 20: "debug", 30: "info", 40: "warn", 50: "error", 60: "fatal" };
const QUIET_FIELDS = new Set(["level", "time", "msg", "service", "pid", "hostname", "span_id", "trace_id", "err"]);

/** One pino JSON line, made readable: time, level, message, a few fields, a link to its trace. */
export function logLine(raw: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(raw);
    if (!entry || typeof entry !== "object" || Array.isArray(entry)) throw new Error("not an object");
  } catch {
    return `<span class="raw">${esc(raw.slice(0, 400))}</span>`;
  }
  const level = LEVELS[Number(entry.level)] ?? String(entry.level ?? "");
  const fields = Object.entries(entry)
    .filter(([key]) => !QUIET_FIELDS.has(key))
    .slice(0, 6)
    .map(([key, value]) => `<span class="k">${esc(key)}=</span>${esc((typeof value === "string" ? value : JSON.stringify(value) ?? "").slice(0, 100))}`);
  const err = entry.err as { message?: unknown } | undefined;
  if (err && typeof err === "object") fields.unshift(`<span class="k">err=</span>${esc(String(err.message ?? "").slice(0, 200))}`);
  const time = typeof entry.time === "string" ? entry.time.slice(11, 19) : "";
  const trace = typeof entry.trace_id === "string" ? ` ${traceLink(entry.trace_id, "trace")}` : "";
  return `<span class="t">${esc(time)}</span> <span class="lv lv-${esc(level)}">${esc(level.toUpperCase().padEnd(5))}</span> ${esc(String(entry.msg ?? "").slice(0, 200))} ${fields.join(" ")}${trace}`;
}

function backlogCell(backlog: Backlog): string {
  if (typeof backlog === "number") return `<span class="${backlog > 0 ? "warn" : ""}" data-outbox="${backlog}">${backlog}</span>`;
  if (backlog === "none") return `<span class="dim">—</span>`;
  return `<span class="dim" title="${esc(backlog.unreachable)}">?</span>`;
}

function services(s: Snapshot): string {
  const rows = s.processes.map((p) => `
    <tr class="proc" data-name="${esc(p.name)}" data-state="${esc(p.state)}">
      <td>${serviceBadge(p.name)}</td>
      <td><span class="state ${STATE_CLASS[p.state] ?? "idle"}">${esc(p.state)}</span></td>
      <td class="num" data-restarts="${p.restarts}">${p.restarts}</td>
      <td class="num">${esc(p.pid ?? "—")}</td>
      <td><code>${esc(p.address)}</code></td>
      <td>${link(p.metricsUrl, "/metrics")}</td>
    </tr>
    <tr class="logs" data-name="${esc(p.name)}"><td colspan="6"><pre>${p.logs.slice(-10).map(logLine).join("\n") || '<span class="dim">no output yet</span>'}</pre></td></tr>`);
  const serving = s.processes.filter((p) => p.state === "serving").length;
  return `<h2>Services <small>${serving} of ${s.processes.length} serving · gateway ${link(s.gatewayUrl)}</small></h2>
    <table><thead><tr><th>process</th><th>state</th><th>restarts</th><th>pid</th><th>address</th><th>metrics</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

const BARS = "▁▂▃▄▅▆▇█";
const sparkline = (history: number[]) => {
  const max = Math.max(1, ...history);
  return history.map((n) => (n === 0 ? "·" : BARS[Math.min(BARS.length - 1, Math.floor((n / max) * (BARS.length - 1)))])).join("");
};

const natsNote = (s: Snapshot) => (s.natsStatus ? `<p class="warn">${esc(s.natsStatus)}</p>` : "");

function events(s: Snapshot): string {
  const rows = s.rates.map((r) => `
    <tr class="subject" data-subject="${esc(r.subject)}" data-total="${r.total}">
      <td><code>${esc(r.subject)}</code></td><td class="num">${r.perSecond.toFixed(1)}</td>
      <td class="spark" title="messages in each of the last ${s.windowSeconds} seconds">${sparkline(r.perSecondHistory)}</td><td class="num">${r.total}</td>
    </tr>`);
  const recent = s.recent.slice(0, 12).map((e) => `
    <tr class="event" data-subject="${esc(e.subject)}"${e.replayOf ? ` data-replay-of="${esc(e.replayOf)}"` : ""}>
      <td>${clock(e.time)}</td><td><code>${esc(e.subject)}</code></td><td>${esc(e.source)}</td>
      <td><code class="dim">${esc(e.id)}</code>${e.replayOf ? ` <span class="warn">replay of dead letter #${esc(e.replayOf)}</span>` : ""}</td>
      <td>${e.traceId ? traceLink(e.traceId) : ""}</td>
    </tr>`);
  return `<h2>Events <small>per subject, since the dashboard started</small></h2>${natsNote(s)}
    <table><thead><tr><th>subject</th><th>msgs/s (${s.windowSeconds} s)</th><th>last ${s.windowSeconds} s</th><th>total</th></tr></thead>
    <tbody>${rows.join("") || `<tr><td colspan="4" class="dim">no events yet</td></tr>`}</tbody></table>
    <h3>Latest</h3><table><thead><tr><th>time</th><th>subject</th><th>source</th><th>event id</th><th>trace</th></tr></thead>
    <tbody>${recent.join("") || `<tr><td colspan="5" class="dim">none</td></tr>`}</tbody></table>`;
}

function backlog(s: Snapshot): string {
  const names = [...new Set([...s.processes.map((p) => p.name), ...s.lag.map((l) => l.service)])];
  const rows = names.map((name) => {
    const process = s.processes.find((p) => p.name === name);
    const consumers = s.lag.filter((l) => l.service === name);
    const known = consumers.filter((c) => c.pending !== undefined);
    const total = known.reduce((sum, c) => sum + c.pending! + c.ackPending!, 0);
    const detail = consumers.map((c) => c.pending === undefined
      ? `<span class="dim" title="${esc(c.stream)} / ${esc(c.durable)}">${esc(c.consumer)}: not created</span>`
      : `<span class="${c.pending + c.ackPending! > 0 ? "warn" : ""}" title="${esc(c.stream)} / ${esc(c.durable)}: ${c.pending} pending, ${c.ackPending} unacknowledged, ${c.redelivered} redelivered">${esc(c.consumer)} ${c.pending + c.ackPending!}</span>`);
    return `<tr class="backlog" data-service="${esc(name)}"><td>${serviceBadge(name)}</td><td class="num">${process ? backlogCell(process.backlog) : `<span class="dim">—</span>`}</td>
      <td class="num"${consumers.length && known.length === consumers.length ? ` data-lag="${total}"` : ""}>${consumers.length ? (known.length ? total : "?") : `<span class="dim">—</span>`}</td><td>${detail.join(" · ")}</td></tr>`;
  });
  return `<h2>Outbox backlog &amp; consumer lag</h2>${natsNote(s)}
    <table><thead><tr><th>service</th><th>outbox</th><th>lag</th><th>consumers (pending + unacknowledged)</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function deadLetters(s: Snapshot): string {
  const letters = [...s.deadLetters].reverse().slice(0, 100);
  const rows = letters.map((l) => `
    <tr class="letter" data-seq="${l.seq}" data-event-id="${esc(l.eventId)}">
      <td class="num">#${l.seq}</td><td>${clock(l.time)}</td><td>${esc(l.consumer)}</td><td><code>${esc(l.subject)}</code></td>
      <td class="num">${esc(l.deliveries)}</td><td class="reason">${esc(l.reason)}<br><code class="dim">${esc(l.type)} ${esc(l.eventId)}</code></td>
      <td><form method="post" action="/api/dead-letters/${l.seq}/replay"><button type="submit" data-replay="${l.seq}">Replay</button></form></td>
    </tr>`);
  const more = s.deadLetters.length > letters.length ? `<p class="dim">showing the latest ${letters.length} of ${s.deadLetters.length}</p>` : "";
  return `<h2>Dead letters <small>${s.deadLetters.length}</small></h2>${natsNote(s)}
    <table><thead><tr><th>#</th><th>time</th><th>consumer</th><th>subject</th><th>deliveries</th><th>reason</th><th></th></tr></thead>
    <tbody>${rows.join("") || `<tr><td colspan="7" class="dim">none</td></tr>`}</tbody></table>${more}`;
}

function traces(s: Snapshot): string {
  const rows = s.traces.slice(0, 30).map((t) => `
    <tr class="trace" data-trace-id="${t.traceId}">
      <td>${traceLink(t.traceId)}</td><td>${clock(new Date(t.startMs))}</td><td>${serviceBadge(t.root.service)} ${esc(t.root.name)}</td>
      <td class="num" title="${esc(t.services.join(", "))}">${t.services.length}</td><td class="num">${t.spans}</td><td class="num">${duration(t.durationMs)}</td>
      <td>${t.errors ? `<span class="bad-text">${t.errors} error${t.errors > 1 ? "s" : ""}</span>` : ""}</td>
    </tr>`);
  return `<h2>Traces <small>latest ${s.traces.length}; click one for its spans</small></h2>
    <table><thead><tr><th>trace id</th><th>start</th><th>root span</th><th>services</th><th>spans</th><th>duration</th><th></th></tr></thead>
    <tbody>${rows.join("") || `<tr><td colspan="7" class="dim">no spans received yet (processes export to POST /v1/traces)</td></tr>`}</tbody></table>`;
}

function trace(s: Snapshot): string {
  if (!s.trace) return "";
  if (s.trace === "missing") return `<h2>Trace</h2><p class="dim">That trace is not (or no longer) here.</p>`;
  const { summary, spans } = s.trace;
  const total = Math.max(summary.durationMs, 0.001);
  const rows = spans.map((span) => {
    const left = ((span.startMs - summary.startMs) / total) * 100;
    const width = Math.max(((span.endMs - span.startMs) / total) * 100, 0.3);
    const attributes = Object.entries(span.attributes).map(([k, v]) => `${k}=${v}`).join("\n");
    return `<tr class="span" data-service="${esc(span.service)}" data-kind="${span.kind}" data-name="${esc(span.name)}" title="${esc(attributes)}">
      <td style="padding-left:${0.4 + span.depth * 1.1}em">${serviceBadge(span.service)} ${esc(span.name)}${span.error !== undefined ? ` <span class="bad-text">error ${esc(span.error)}</span>` : ""}</td>
      <td class="dim">${span.kind}</td><td class="num">${duration(span.endMs - span.startMs)}</td>
      <td class="lane"><i style="left:${left.toFixed(2)}%;width:${Math.min(width, 100 - left).toFixed(2)}%;--h:${hue(span.service)}"></i></td></tr>`;
  });
  return `<h2>Trace <code>${esc(summary.traceId)}</code> <small>${summary.spans} spans across ${summary.services.map(serviceBadge).join(" ")} · ${duration(summary.durationMs)}</small></h2>
    <table class="waterfall"><thead><tr><th>span</th><th>kind</th><th>duration</th><th>timeline</th></tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

const RENDER: Record<Section, (s: Snapshot) => string> = {
  services, events, backlog, "dead-letters": deadLetters, traces, trace,
};

/** Each section's inner HTML, for the page's refresh. */
export function fragments(s: Snapshot): Record<Section, string> {
  return Object.fromEntries(SECTIONS.map((id) => [id, RENDER[id](s)])) as Record<Section, string>;
}

const STYLE = `
:root{color-scheme:light dark;--bg:#fbfbfa;--fg:#1d1f21;--dim:#777;--line:#e2e2e0;--ok:#1a7f37;--busy:#9a6700;--bad:#cf222e}
@media (prefers-color-scheme:dark){:root{--bg:#16181b;--fg:#e6e6e6;--dim:#8b8f96;--line:#2c2f34}}
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:var(--bg);color:var(--fg)}
header{padding:.7em 1.2em;border-bottom:1px solid var(--line);display:flex;gap:1em;align-items:baseline}
header h1{font-size:1.15em;margin:0} main{padding:0 1.2em 2em;display:grid;grid-template-columns:repeat(auto-fit,minmax(620px,1fr));gap:0 2em}
section{min-width:0} #services,#trace{grid-column:1/-1} h2{font-size:1.05em;margin:1.2em 0 .4em} h2 small{font-weight:normal;color:var(--dim)} h3{font-size:.95em;margin:.8em 0 .3em}
table{border-collapse:collapse;width:100%} th,td{text-align:left;padding:.2em .5em;border-bottom:1px solid var(--line);vertical-align:top} th{font-weight:600;font-size:.85em;color:var(--dim)}
td.num{text-align:right;font-variant-numeric:tabular-nums} code{font:12px ui-monospace,monospace} .dim{color:var(--dim)} .warn{color:var(--busy)} .bad-text{color:var(--bad)}
.state{padding:0 .5em;border-radius:1em;font-size:.85em;border:1px solid} .state.ok{color:var(--ok)} .state.busy{color:var(--busy)} .state.bad{color:var(--bad)} .state.idle{color:var(--dim)}
.svc{display:inline-block;padding:0 .45em;border-radius:.3em;font-size:.85em;background:hsl(var(--h) 60% 50%/.15);color:hsl(var(--h) 55% 40%)}
@media (prefers-color-scheme:dark){.svc{color:hsl(var(--h) 70% 70%)}}
tr.logs td{border-bottom:2px solid var(--line);padding-top:0} pre{margin:0;font:11.5px/1.35 ui-monospace,monospace;white-space:pre-wrap;word-break:break-all;max-height:13.5em;overflow:auto}
.t,.k{color:var(--dim)} .lv-warn{color:var(--busy)} .lv-error,.lv-fatal{color:var(--bad)} .lv-info{color:var(--ok)}
td.spark{font-family:ui-monospace,monospace;letter-spacing:1px} td.reason{max-width:28em;word-break:break-word}
td.lane{position:relative;min-width:14em;width:40%} td.lane i{position:absolute;top:.35em;bottom:.35em;border-radius:2px;background:hsl(var(--h) 60% 50%)}
button{font:inherit;padding:.1em .8em;cursor:pointer} body.stale header::after{content:"dashboard not answering";color:var(--bad)}`;

const SCRIPT = `
const seen = new Map();
let timer;
async function refresh() {
  clearTimeout(timer);
  try {
    const res = await fetch("/parts" + location.search, { headers: { accept: "application/json" } });
    if (!res.ok) throw new Error(String(res.status));
    for (const [id, html] of Object.entries(await res.json())) {
      const el = document.getElementById(id);
      if (el && seen.get(id) !== html) { el.innerHTML = html; seen.set(id, html); }
    }
    document.body.classList.remove("stale");
  } catch { document.body.classList.add("stale"); }
  timer = setTimeout(refresh, 2000);
}
document.addEventListener("click", (e) => {
  const a = e.target.closest("a[data-trace]");
  if (!a) return;
  e.preventDefault();
  history.replaceState(null, "", "?trace=" + a.dataset.trace + "#trace");
  refresh().then(() => document.getElementById("trace").scrollIntoView({ behavior: "smooth" }));
});
document.addEventListener("submit", async (e) => {
  const button = e.target.querySelector("button[data-replay]");
  if (!button) return;
  e.preventDefault();
  button.disabled = true;
  const out = document.getElementById("replay-result");
  try {
    const res = await fetch(e.target.action, { method: "POST", headers: { accept: "application/json" } });
    const body = await res.json();
    out.textContent = res.ok ? "Dead letter #" + button.dataset.replay + " published again on its subject." : "Replay failed: " + body.error;
  } catch (err) { out.textContent = "Replay failed: " + err; }
  refresh();
});
timer = setTimeout(refresh, 2000);`;

/** For the page's Content-Security-Policy: this one inline script may run, nothing else. */
export const scriptHash = `sha256-${createHash("sha256").update(SCRIPT).digest("base64")}`;

export function page(s: Snapshot): string {
  const parts = fragments(s);
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>ShopMesh dashboard</title><style>${STYLE}</style></head>
<body><header><h1>ShopMesh</h1><span class="dim">local dashboard · refreshes every 2 s</span><output id="replay-result"></output></header>
<main>${SECTIONS.map((id) => `<section id="${id}">${parts[id]}</section>`).join("\n")}</main>
<script>${SCRIPT}</script></body></html>`;
}
