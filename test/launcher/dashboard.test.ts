// The launcher's dashboard in a real headless Chromium (Debian's), served by the real launcher:
// `npm start` in a fresh copy of the repository on ports of its own, which serves the dashboard at
// :8081 (+ offset) and sends every process's spans to it. The page must show the mesh coming up
// and serving, an order placed through the gateway as one trace across processes and as events,
// and replay a dead letter that a consumer really refused.
import { existsSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { request } from "node:http";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { chromium, type Browser, type Page } from "playwright-core";
import { connect, headers as natsHeaders, type Msg, type NatsConnection } from "nats";
import { UserRegisteredSchema } from "../../gen/shop/identity/v1/events_pb.js";
import { loadTls } from "../../mesh/certs.js";
import { listDeadLetters } from "../../mesh/events/dead-letters.js";
import { encodeEvent } from "../../mesh/events/events.js";
import { natsConnectOptions, natsOperator } from "../../mesh/events/nats-config.js";
import { serviceNames, topology } from "../../mesh/topology.js";
import { startDashboard, type Dashboard } from "../../launcher/dashboard/server.js";
import { launcherPorts } from "../../launcher/ports.js";
import { spansFromOtlpJson, TraceStore, type TraceDetail } from "../../launcher/dashboard/otlp-traces.js";
import { demoProducts } from "../../services/catalog/demo.js";
import { eventually } from "../support/eventually.js";
import { freePortOffset, freshCopy, logTails, removeCopy, startLauncher, type Launcher } from "../support/fresh-start.js";
import { shopHttp } from "../support/shop-http.js";

const CHROMIUM = "/usr/bin/chromium";
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`dashboard test skipped: ${CHROMIUM} is missing (apt-get install chromium)`);

let dir: string | undefined;
let launcher: Launcher | undefined;
let dashboardUrl: string;
let browser: Browser;
let page: Page;
let nc: NatsConnection | undefined;
/** Uncaught errors in the page's script (a Content-Security-Policy refusal shows up here too). */
const pageErrors: string[] = [];

/**
 * Waits until `fn(arg)` is true in the page (which refreshes itself every 2 s). A function, not a
 * string: the page's Content-Security-Policy forbids eval, and the test keeps it on.
 */
const until = <A>(fn: (arg: A) => boolean, arg: A, timeout = 60_000) => page.waitForFunction(fn as (arg: unknown) => boolean, arg, { timeout, polling: 200 });

/** Where the launcher says each process listens, at its port offset. */
function expectedRows(offset: number) {
  const services = serviceNames.map((name) => ({
    name,
    address: `grpcs://127.0.0.1:${topology[name].grpcPort + offset}`,
    metricsUrl: `http://127.0.0.1:${topology[name].metricsPort + offset}/metrics`,
  }));
  return [...services, { name: "gateway", address: `http://127.0.0.1:${8080 + offset}`, metricsUrl: `http://127.0.0.1:${9450 + offset}/metrics` }];
}

let reported = false;
function reportLauncher() {
  if (reported || !launcher || !dir) return;
  reported = true;
  console.error(`npm start's output:\n${launcher.progress.output()}\n\n${logTails(dir)}`);
}

describe.skipIf(!haveChromium)("launcher dashboard (headless Chromium, served by npm start)", () => {
  beforeEach(({ onTestFailed }) => onTestFailed(reportLauncher));
  beforeAll(async () => {
    dir = freshCopy(undefined, "shopmesh-dashboard-");
    const offset = await freePortOffset();
    launcher = startLauncher(dir, offset);
    dashboardUrl = `http://127.0.0.1:${launcherPorts(offset).dashboard}`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"],
    });
    page = await browser.newPage();
    page.on("pageerror", (err) => pageErrors.push(err.message));
  }, 120_000);
  afterAll(async () => {
    await nc?.close().catch(() => {});
    await browser?.close();
    if (!launcher || !dir) return;
    try {
      // Ctrl-C, as a user stops it: the launcher stops the dashboard after the services.
      if (!launcher.progress.exit) {
        launcher.interrupt();
        const exit = await launcher.progress.waitForExit();
        if (exit.code !== 0) throw new Error(`npm start exited with ${JSON.stringify(exit)} on Ctrl-C`);
      }
    } catch (err) {
      reportLauncher();
      launcher.kill();
      throw err;
    } finally {
      await removeCopy(dir);
    }
  }, 180_000);

  it("loads while the mesh starts, and shows the six services and the gateway serving, with their addresses, /metrics and logs", async () => {
    // The launcher serves the dashboard before it starts the processes: one can watch them come up.
    await launcher!.progress.until("the dashboard to answer", () => fetch(`${dashboardUrl}/api/services`, { signal: AbortSignal.timeout(2_000) }).then((r) => r.ok, () => false));
    const started = performance.now();
    const res = await page.goto(dashboardUrl, { waitUntil: "load" });
    const loadMs = performance.now() - started;
    expect(res?.status()).toBe(200);
    expect(res?.headers()["content-security-policy"]).toContain("frame-ancestors 'none'");
    console.log(`dashboard: first page load ${loadMs.toFixed(0)} ms (while the mesh starts)`);
    // Waits on the launcher's progress (it fails at once if the launcher exits), then on the page.
    await launcher!.ready({ boundMs: 480_000 });
    const upLine = launcher!.progress.lines[await launcher!.progress.waitForLine(/^ShopMesh is up in \d+\.\d s/)]!;
    const databases = launcher!.progress.lines.find((l) => /^  databases /.test(l))?.trim().replace(/\s+/g, " ");
    console.log(`dashboard: npm start says "${upLine.replace(/ \(.*/, "")}"; ${databases}`);
    await until(() => document.querySelectorAll('tr.proc[data-state="serving"]').length === 7, undefined);
    for (const p of expectedRows(launcher!.offset)) {
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
  }, 600_000);

  it("shows an order placed through the gateway as one trace across processes, and as events", async () => {
    const shop = shopHttp(launcher!.gatewayUrl);
    const email = `ada-${Date.now()}@example.com`;
    expect((await shop.persist(() => shop.call("POST", "/v1/auth/register", { email, password: "correct horse", displayName: "Ada" }))).status).toBe(200);
    const token = (await shop.persist(() => shop.call("POST", "/v1/auth/login", { email, password: "correct horse" }))).body.accessToken;
    const method = await shop.persist(() => shop.call("POST", "/v1/payment-methods", { cardNumber: "4242424242424242" }, token));
    expect(method.status).toBe(200);
    // The order's trace id is ours: the gateway continues a caller's W3C traceparent. A retry (a
    // busy machine may answer 504) carries the same idempotency key, so it is still one order.
    const traceId = randomBytes(16).toString("hex");
    const created = await shop.persist(() => shop.call("POST", "/v1/orders", {
      lines: [{ productId: demoProducts[0]!.id, quantity: 1 }],
      shippingAddress: { recipientName: "Ada", addressLines: ["1 Main St"], city: "Town", countryCode: "DE" },
      paymentMethod: { token: method.body.paymentMethod.token },
    }, token, { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01`, "idempotency-key": `dash-${traceId}` }));
    expect(created.status, JSON.stringify(created.body)).toBe(200);

    const row = page.locator(`tr.trace[data-trace-id="${traceId}"]`);
    await row.waitFor({ timeout: 60_000 });
    // Each process sends its spans in its own batches: the gateway's root span may come last.
    await expect.poll(() => row.textContent(), { timeout: 60_000 }).toContain("POST edge");
    // The launcher's /readyz probes (several a second while it starts) left no traces to bury it.
    const listed = (await (await fetch(`${dashboardUrl}/api/traces`)).json()) as { root: { name: string } }[];
    expect(listed.map((t) => t.root.name)).not.toContain("GET edge");
    await row.locator("a[data-trace]").click();
    // The saga runs on: wait until its spans from every step have arrived. In npm start's default
    // layout the six services share one process, and each span still names its own service
    // (launcher/host-tracing.ts).
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
    const answer = await fetch(`${dashboardUrl}/api/traces/${traceId}`);
    expect(answer.status).toBe(200);
    const detail = (await answer.json()) as TraceDetail;
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
  }, 180_000);

  it("replays a dead letter from its Replay button", async () => {
    // As the operator (certs/client.*), as `npm run dlq` connects, to the launcher's NATS.
    const tls = await loadTls(join(dir!, "certs"), natsOperator);
    nc = await connect({ servers: `tls://127.0.0.1:${launcherPorts(launcher!.offset).nats}`, timeout: 5_000, ...natsConnectOptions(natsOperator, tls) });
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
    // A dead-lettered message leaves its consumer: no lag stays behind it.
    await until(() => document.querySelectorAll('tr.backlog [data-lag="0"]').length === 4, undefined, 30_000);
    // DASHBOARD_SCREENSHOT=<file.png> keeps a picture of the page as the test left it.
    if (process.env.DASHBOARD_SCREENSHOT) await page.screenshot({ path: process.env.DASHBOARD_SCREENSHOT, fullPage: true });
    expect(pageErrors).toEqual([]);
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

  it("keeps traces within a byte budget, in all and per trace, not only a count", () => {
    const store = new TraceStore(200, 500, 64 * 1024, 8 * 1024);
    const large = "x".repeat(250); // a name at about its limit: ~0.6 KiB a span
    const ids = Array.from({ length: 300 }, () => randomBytes(16).toString("hex"));
    for (const id of ids) store.add(spansFromOtlpJson(otlp(id, large)));
    const kept = store.list(500);
    expect(kept.length).toBeGreaterThan(50);
    expect(kept.length).toBeLessThan(150); // 300 spans would need ~180 KiB
    expect(kept.map((t) => t.traceId)).toContain(ids.at(-1)); // the newest stay
    expect(kept.map((t) => t.traceId)).not.toContain(ids[0]);
    // One trace stops growing at its own budget.
    const one = randomBytes(16).toString("hex");
    for (let i = 0; i < 100; i++) store.add(spansFromOtlpJson(otlp(one, large)));
    expect(store.get(one)!.summary.spans).toBeLessThan(20);
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
