// The launcher's dashboard in a real headless Chromium (Debian's), in front of a real mesh: the six
// services and the gateway as their own processes exporting spans to the dashboard over OTLP, one
// nats-server, one redis-server. The page must show the services healthy, an order placed
// through the gateway as one trace across processes and as events, and replay a dead letter that
// a consumer really refused.
import { existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { request } from "node:http";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type Browser, type Page } from "playwright-core";
import type { Msg, NatsConnection } from "nats";
import { UserRegisteredSchema } from "../../gen/shop/identity/v1/events_pb.js";
import { listDeadLetters } from "../../mesh/events/dead-letters.js";
import { encodeEvent } from "../../mesh/events/events.js";
import { headers as natsHeaders } from "nats";
import { startDashboard, type Dashboard } from "../../launcher/dashboard/server.js";
import { demoProducts } from "../../services/catalog/demo.js";
import { eventually } from "../support/eventually.js";
import { shopHttp } from "../support/shop-http.js";
import { processMeshView, type ProcessMeshView } from "./process-view.js";

const CHROMIUM = "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`dashboard test skipped: ${CHROMIUM} is missing (apt-get install chromium)`);

let mesh: ProcessMeshView;
let dashboard: Dashboard;
let browser: Browser;
let page: Page;
let nc: NatsConnection;

/**
 * Waits until `fn(arg)` is true in the page (which refreshes itself every 2 s). A function, not a
 * string: the page's Content-Security-Policy forbids eval, and the test keeps it on.
 */
const until = <A>(fn: (arg: A) => boolean, arg: A, timeout = 60_000) => page.waitForFunction(fn as (arg: unknown) => boolean, arg, { timeout, polling: 200 });


describe.skipIf(!haveChromium)("launcher dashboard (headless Chromium)", () => {
  beforeAll(async () => {
    mesh = await processMeshView();
    dashboard = await startDashboard({ view: mesh, host: "127.0.0.1", port: 0 });
    // What the launcher sets for its children: spans go to the dashboard, in batches every 200 ms.
    await mesh.spawnAll({ OTEL_EXPORTER_OTLP_ENDPOINT: dashboard.url, OTEL_BSP_SCHEDULE_DELAY: "200" });
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    page = await browser.newPage();
    nc = await mesh.nats.connect();
  }, 120_000);
  afterAll(async () => {
    await nc?.close();
    await browser?.close();
    await dashboard?.stop();
    await mesh?.stop();
  }, 60_000);

  it("loads, and shows the six services and the gateway serving, with their addresses, /metrics and logs", async () => {
    const started = performance.now();
    const res = await page.goto(dashboard.url, { waitUntil: "load" });
    const loadMs = performance.now() - started;
    expect(res?.status()).toBe(200);
    expect(res?.headers()["content-security-policy"]).toContain("frame-ancestors 'none'");
    console.log(`dashboard: first page load ${loadMs.toFixed(0)} ms`);
    // A busy two-core machine starts seven node processes slowly.
    await until(() => document.querySelectorAll('tr.proc[data-state="serving"]').length === 7, undefined, 240_000);
    for (const p of mesh.processes()) {
      const row = page.locator(`tr.proc[data-name="${p.name}"]`);
      expect(await row.getAttribute("data-state")).toBe("serving");
      expect(await row.locator("code").textContent()).toBe(p.address);
      expect(await row.locator("a").getAttribute("href")).toBe(p.metricsUrl);
    }
    // Each process's own log lines, made readable: a service's "serving" line, the gateway's access log.
    await until(() => {
      const logs = [...document.querySelectorAll<HTMLElement>("tr.logs")];
      const readable = logs.filter((tr) => tr.querySelector("span.lv-info") !== null);
      const serving = logs.filter((tr) => tr.dataset.name !== "gateway" && /INFO\s+serving/.test(tr.textContent ?? ""));
      return readable.length === 7 && serving.length === 6;
    }, undefined);
    const again = performance.now();
    await page.reload({ waitUntil: "load" });
    console.log(`dashboard: page load with the mesh up ${(performance.now() - again).toFixed(0)} ms`);
  }, 300_000);

  it("shows an order placed through the gateway as one trace across processes, and as events", async () => {
    const shop = shopHttp(mesh.gatewayUrl);
    const email = `ada-${Date.now()}@example.com`;
    expect((await shop.persist(() => shop.call("POST", "/v1/auth/register", { email, password: "correct horse", displayName: "Ada" }))).status).toBe(200);
    const token = (await shop.call("POST", "/v1/auth/login", { email, password: "correct horse" })).body.accessToken;
    const method = await shop.call("POST", "/v1/payment-methods", { cardNumber: "4242424242424242" }, token);
    expect(method.status).toBe(200);
    // The order's trace id is ours: the gateway continues a caller's W3C traceparent.
    const traceId = randomBytes(16).toString("hex");
    const created = await shop.call("POST", "/v1/orders", {
      lines: [{ productId: demoProducts[0]!.id, quantity: 1 }],
      shippingAddress: { recipientName: "Ada", addressLines: ["1 Main St"], city: "Town", countryCode: "DE" },
      paymentMethod: { token: method.body.paymentMethod.token },
    }, token, { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01`, "idempotency-key": `dash-${traceId}` });
    expect(created.status).toBe(200);

    const row = page.locator(`tr.trace[data-trace-id="${traceId}"]`);
    await row.waitFor({ timeout: 60_000 });
    expect(await row.textContent()).toContain("POST edge");
    await row.locator("a[data-trace]").click();
    // The saga runs on: wait until its spans from every step have arrived.
    const steps = [
      `[data-service="gateway"][data-kind="server"][data-name="POST edge"]`,
      `[data-service="order"][data-kind="server"][data-name="shop.order.v1.OrderService/CreateOrder"]`,
      `[data-service="catalog"][data-kind="server"]`,
      `[data-service="inventory"][data-kind="consumer"][data-name="consume shop.order.created"]`,
      `[data-service="payment"][data-kind="consumer"][data-name="consume shop.stock.reserved"]`,
      `[data-service="order"][data-kind="consumer"][data-name="consume shop.payment.captured"]`,
    ];
    await until((selectors) => selectors.every((s) => document.querySelector(`#trace tr.span${s}`) !== null), steps);
    expect(new URL(page.url()).searchParams.get("trace")).toBe(traceId);
    const detail = dashboard.traces.get(traceId)!;
    expect(detail.spans[0]!.service).toBe("gateway"); // the root, then its descendants
    expect(new Set(detail.spans.map((s) => s.traceId))).toEqual(new Set([traceId]));
    console.log(`dashboard: the order's trace has ${detail.summary.spans} spans across ${detail.summary.services.join(", ")}`);

    // The saga's events, counted per subject, and the order's event linked to its trace.
    const subjects = ["shop.order.created", "shop.stock.reserved", "shop.payment.captured", "shop.order.confirmed"];
    await until((names) => names.every((s) => Number(document.querySelector<HTMLElement>(`tr.subject[data-subject="${s}"]`)?.dataset.total) >= 1), subjects);
    const latest = page.locator(`tr.event[data-subject="shop.order.created"] a[data-trace="${traceId}"]`);
    expect(await latest.count()).toBe(1);
    // Outbox backlogs read from each service's /metrics, and every consumer caught up.
    await until(() => document.querySelectorAll('tr.backlog [data-outbox="0"]').length === 6 && document.querySelectorAll('tr.backlog [data-lag="0"]').length === 4, undefined);
  }, 120_000);

  it("replays a dead letter from its Replay button", async () => {
    // A UserRegistered whose payload does not decode: notification's welcome consumer refuses it
    // at once and dead-letters it, as it would a broken producer's event.
    const event = encodeEvent(UserRegisteredSchema, {}, { source: "identity" });
    const h = natsHeaders();
    for (const [key, value] of Object.entries(event.headers)) h.set(key, value);
    const republished: Msg[] = [];
    const sub = nc.subscribe(event.subject);
    void (async () => {
      for await (const msg of sub) republished.push(msg);
    })();
    await nc.jetstream().publish(event.subject, new Uint8Array([0xff, 0xff, 0xff]), { headers: h, msgID: event.id });

    const letter = page.locator(`tr.letter[data-event-id="${event.id}"]`);
    await letter.waitFor({ timeout: 60_000 });
    const seq = await letter.getAttribute("data-seq");
    expect(await letter.textContent()).toContain("notification-welcome");
    expect(await letter.textContent()).toContain("does not decode");

    await page.locator(`button[data-replay="${seq}"]`).click();
    await page.locator(`tr.letter[data-seq="${seq}"]`).waitFor({ state: "detached", timeout: 30_000 });
    expect(await page.locator("#replay-result").textContent()).toContain(`#${seq} published again`);
    const jsm = await nc.jetstreamManager();
    expect((await listDeadLetters(jsm)).map((l) => String(l.seq))).not.toContain(seq);
    // It went out again on its own subject, marked as a replay…
    const replayed = await eventually(() => republished.find((m) => m.headers?.get("replayed-from-dlq") === seq), Boolean, 10_000);
    expect(replayed!.headers!.get("ce-id")).toBe(event.id);
    sub.unsubscribe();
    await until((n) => document.querySelector(`tr.event[data-replay-of="${n}"]`) !== null, seq);
    // …and reached its consumer again, which (the payload being what it is) dead-letters it anew.
    await until(([id, old]) => [...document.querySelectorAll<HTMLElement>(`tr.letter[data-event-id="${id}"]`)].some((tr) => tr.dataset.seq !== old), [event.id, seq], 30_000);
    // DASHBOARD_SCREENSHOT=<file.png> keeps a picture of the page as the test left it.
    if (process.env.DASHBOARD_SCREENSHOT) await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT, fullPage: true });
  }, 120_000);
});

describe("launcher dashboard: the OTLP receiver and the guards of a local page", () => {
  let lone: Dashboard;
  const view = { processes: () => [], natsUrl: "tls://127.0.0.1:1", certsDir: "/nonexistent", gatewayUrl: "http://127.0.0.1:8080" };
  beforeAll(async () => {
    lone = await startDashboard({ view, port: 0, maxTraces: 3, maxBodyBytes: 64 * 1024 });
  });
  afterAll(() => lone?.stop());

  const otlp = (traceId: string, name: string, service = "order") => ({
    resourceSpans: [{
      resource: { attributes: [{ key: "service.name", value: { stringValue: service } }] },
      scopeSpans: [{ spans: [{ traceId, spanId: randomBytes(8).toString("hex"), name, kind: 2, startTimeUnixNano: "1700000000000000000", endTimeUnixNano: "1700000000012500000", status: {} }] }],
    }],
  });
  const post = (path: string, body: string | Uint8Array<ArrayBuffer>, headers: Record<string, string> = {}) =>
    fetch(`${lone.url}${path}`, { method: "POST", body, headers: { "content-type": "application/json", ...headers } });

  it("takes OTLP JSON (plain or gzipped), keeps the last traces only, and shows span names escaped", async () => {
    const ids = Array.from({ length: 4 }, () => randomBytes(16).toString("hex"));
    expect((await post("/v1/traces", JSON.stringify(otlp(ids[0]!, "<img src=x onerror=alert(1)>")))).status).toBe(200);
    for (const id of ids.slice(1)) expect((await post("/v1/traces", Uint8Array.from(gzipSync(JSON.stringify(otlp(id, "GET x")))), { "content-encoding": "gzip" })).status).toBe(200);
    expect(lone.traces.list().map((t) => t.traceId).sort()).toEqual(ids.slice(1).sort()); // the first one went
    const [id] = ids.slice(-1);
    const detail = await (await fetch(`${lone.url}/api/traces/${id}`)).json();
    expect(detail.summary).toMatchObject({ spans: 1, services: ["order"], durationMs: 12.5 });

    expect((await post("/v1/traces", JSON.stringify(otlp(ids[1]!, "<img src=x onerror=alert(1)>")))).status).toBe(200);
    const html = await (await fetch(`${lone.url}/?trace=${ids[1]}`)).text();
    expect(html).toContain("&lt;img src=x onerror=alert(1)&gt;");
    expect(html).not.toContain("<img src=x");
  });

  it("refuses what is not OTLP JSON, bodies over its limit, other hosts and cross-origin posts", async () => {
    expect((await post("/v1/traces", "{}", { "content-type": "application/x-protobuf" })).status).toBe(415);
    expect((await post("/v1/traces", "{not json")).status).toBe(400);
    expect((await post("/v1/traces", JSON.stringify({ spans: [] }))).status).toBe(400);
    expect((await post("/v1/traces", "x".repeat(65 * 1024))).status).toBe(413);
    expect((await post("/v1/traces", Uint8Array.from(gzipSync("x".repeat(65 * 1024))), { "content-encoding": "gzip" })).status).toBe(413);
    // A page elsewhere may not replay dead letters or send spans through the user's browser…
    expect((await post("/api/dead-letters/1/replay", "", { origin: "https://evil.example" })).status).toBe(403);
    expect((await post("/v1/traces", JSON.stringify(otlp(randomBytes(16).toString("hex"), "x")), { origin: "https://evil.example" })).status).toBe(403);
    // …nor reach the dashboard under another name (DNS rebinding): node's fetch will not forge Host, so raw HTTP.
    const status = await new Promise<number>((resolve, reject) => {
      request(`${lone.url}/api/traces`, { headers: { host: "evil.example" } }, (res) => resolve(res.statusCode!)).on("error", reject).end();
    });
    expect(status).toBe(421);
    // Without NATS, replay says why.
    const replay = await post("/api/dead-letters/1/replay", "", { accept: "application/json" });
    expect(replay.status).toBe(503);
    expect((await replay.json()).error).toMatch(/operator certificate|NATS/);
  });
});
