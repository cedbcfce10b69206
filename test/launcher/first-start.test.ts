// What a new user does first: clone, `npm start`, shop through the gateway. From a fresh copy of the
// repository (no .data/, certs/ or dist/) the launcher builds, makes certificates, starts the
// databases, NATS, Redis and the mesh (the services in one host process, the default layout) with
// one progress line per service and a summary; brings back a service killed under it; and on
// Ctrl-C stops all it started, exits 0 and leaves no process and no listening port behind. Then,
// in the same copy: the layout with a process per service, and a configuration error.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { serviceNames, topology } from "../../mesh/topology.js";
import { testCards } from "../../services/payment/processor.js";
import { findPostgresBin } from "../support/postgres.js";
import { shopHttp } from "../support/shop-http.js";
import { allLauncherPorts } from "../../launcher/ports.js";
import { hostNodeFlags, processNodeFlags } from "../../launcher/node-flags.js";
import { freePortOffset, freshCopy, listening, logTails, meshPid, processesUsing, removeCopy, startLauncher, type Launcher } from "../support/fresh-start.js";

const processNames = [...serviceNames, "gateway"];
let dir: string | undefined;
let launcher: Launcher | undefined;

/** The arguments `name`'s process runs with. */
const commandOf = (name: string) => {
  const pid = meshPid(dir!, name);
  return processesUsing(dir!).find((p) => p.pid === pid)?.cmdline.split(" ");
};

beforeEach(({ onTestFailed }) =>
  onTestFailed(() => {
    if (!launcher || !dir) return;
    console.error(`npm start's output:\n${launcher.progress.output()}\n\n${logTails(dir)}`);
  }),
);
afterAll(async () => {
  launcher?.kill();
  if (dir) await removeCopy(dir);
}, 60_000);

/** register → login → a payment method → an order, which the saga takes to CONFIRMED. */
async function shopOnce(label: string): Promise<void> {
  const shop = shopHttp(launcher!.gatewayUrl);
  const email = `${label}-${Date.now()}@example.com`;
  const password = "correct horse battery";
  const registered = await shop.persist(() => shop.call("POST", "/v1/auth/register", { email, password, displayName: "New User" }));
  expect(registered.status).toBe(200);
  const login = await shop.persist(() => shop.call("POST", "/v1/auth/login", { email, password }));
  expect(login.status).toBe(200);
  const token = login.body.accessToken as string;
  const products = await shop.persist(() => shop.call("GET", "/v1/products?pageSize=1"));
  expect(products.status).toBe(200);
  const shippingAddress = { recipientName: "New User", addressLines: ["1 Main St"], city: "Town", countryCode: "DE" };
  const order = await shop.placeOrder(token, { lines: [{ productId: products.body.products[0].id, quantity: 1 }], shippingAddress }, testCards.success, `${label}-${email}`);
  expect(order.status, JSON.stringify(order.body)).toBe(200);
  // WatchOrder streams the order's states and ends at a final one.
  const watch = await fetch(`${launcher!.gatewayUrl}/v1/orders/${order.body.order.id}:watch`, {
    headers: { authorization: `Bearer ${token}`, accept: "text/event-stream" },
    signal: AbortSignal.timeout(120_000), // a safety net: the saga takes well under a second
  });
  const states = (await watch.text()).split("\n\n").filter(Boolean).map((e) => JSON.parse(e.replace(/^data: /, "")).order.status);
  expect(states.at(-1)).toBe("ORDER_STATUS_CONFIRMED");
}

describe("first start: npm start in a fresh clone", () => {
  it("builds and starts everything with a progress line per process and a summary, and takes an order to CONFIRMED", async () => {
    const began = performance.now();
    dir = freshCopy();
    for (const made of [".data", "certs", "dist"]) expect(existsSync(join(dir, made))).toBe(false);
    const offset = await freePortOffset();
    launcher = startLauncher(dir, offset);
    await launcher.ready();
    const readyAfter = (performance.now() - began) / 1000;
    await launcher.progress.waitForLine(/^ShopMesh is up in \d+\.\d s/);

    const out = launcher.progress.output();
    expect(out).toMatch(/^Starting ShopMesh: 6 services in one process and the gateway \(SHOPMESH_LAYOUT=combined; logs in \.data\/logs\/\)$/m);
    for (const name of processNames) {
      // Not a terminal: each state change is printed once, ending at "serving after N s".
      expect(out).toMatch(new RegExp(`^  ${name} +starting `, "m"));
      expect(out).toMatch(new RegExp(`^  ${name} +serving +after \\d+\\.\\d s$`, "m"));
    }
    for (const name of serviceNames) expect(out).toContain(`  ${name.padEnd(13)} grpcs://127.0.0.1:${topology[name].grpcPort + offset}   metrics http://127.0.0.1:${topology[name].metricsPort + offset}/metrics`);
    expect(out).toContain(`  gateway       http://127.0.0.1:${8080 + offset}   (REST/JSON`);
    expect(out).toMatch(findPostgresBin() ? /^  databases +PostgreSQL, a database per service/m : /^  databases +PGlite/m);
    expect(out).toMatch(/^A crashed process is restarted\. Ctrl-C stops everything\.$/m);
    expect(out).not.toMatch(/^could not start|^\S+ failed: |^\S+ is stuck /m); // the launcher's words for trouble at start
    for (const made of ["certs/ca.crt", "dist/gateway/main.js", ".data/logs/gateway.log", ".data/logs/order.log"]) expect(existsSync(join(dir, made))).toBe(true);
    // V8 keeps a bundle's source text in the heap, at one byte per character only when every
    // character is Latin-1 (scripts/build.mjs leaves out the comments that had others).
    const bundles = readdirSync(join(dir, "dist"), { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".js"));
    expect(bundles.length).toBeGreaterThan(10);
    expect(bundles.filter((f) => /[^\x00-\xff]/.test(readFileSync(join(dir!, "dist", f), "utf8")))).toEqual([]);
    // Each process with its heap sizes (launcher/node-flags.ts).
    expect(commandOf("order")).toEqual(expect.arrayContaining([...hostNodeFlags]));
    expect(commandOf("order")!.filter((arg) => arg.startsWith("--max-old-space-size"))).toEqual([]); // six services' heaps together
    expect(commandOf("gateway")).toEqual(expect.arrayContaining([...processNodeFlags]));
    // One host runs the six services; each still writes its own log.
    expect(new Set(serviceNames.map((n) => meshPid(dir!, n))).size).toBe(1);
    expect(readFileSync(join(dir, ".data/logs/order.log"), "utf8")).toMatch(/"service":"order".*"msg":"serving"/);
    expect(readFileSync(join(dir, ".data/logs/order.log"), "utf8")).not.toContain('"service":"payment"');

    await shopOnce("first-order");
    console.log(`first start: gateway ready ${readyAfter.toFixed(1)} s after the copy began (port offset ${offset}); first order CONFIRMED at ${((performance.now() - began) / 1000).toFixed(1)} s`);
  }, 600_000);

  it("restarts a service killed under it (with the services it shares a process with), says so, and the shop works again", async () => {
    const { progress } = launcher!;
    const victim = meshPid(dir!, "order");
    expect(victim).toBeDefined();
    const from = progress.lines.length;
    process.kill(victim!, "SIGKILL");
    await progress.waitForLine(/^\[\d\d:\d\d:\d\d\] order killed by SIGKILL; restarting in 1 s \(restart 1\)$/, { from });
    await progress.waitForLine(/^\[\d\d:\d\d:\d\d\] order is serving again \(restarted ×1\)$/, { from });
    const again = meshPid(dir!, "order");
    expect(again).toBeDefined();
    expect(again).not.toBe(victim);
    await shopOnce("after-restart");
  }, 300_000);

  it("stops everything on Ctrl-C, exits 0, and leaves no process and no port behind", async () => {
    const { progress, offset } = launcher!;
    launcher!.interrupt();
    const exit = await progress.waitForExit();
    expect(progress.output()).toMatch(/^stopped\.$/m);
    expect(progress.output()).not.toContain("killing everything now");
    expect(exit).toEqual({ code: 0, signal: null });
    expect(processesUsing(dir!).map((p) => `${p.pid} ${p.cmdline}`)).toEqual([]);
    expect(listening(allLauncherPorts(offset))).toEqual([]);
  }, 300_000);
});

describe("in the same copy: the other layout, and a configuration error", () => {
  it("runs every service in its own process with SHOPMESH_LAYOUT=processes, takes an order, and stops on Ctrl-C", async () => {
    launcher = startLauncher(dir!, launcher!.offset, { SHOPMESH_LAYOUT: "processes" });
    await launcher.ready();
    await launcher.progress.waitForLine(/^ShopMesh is up in \d+\.\d s/);
    expect(launcher.progress.output()).toMatch(/^Starting ShopMesh: 6 services each in its own process and the gateway \(SHOPMESH_LAYOUT=processes;/m);
    expect(new Set(serviceNames.map((n) => meshPid(dir!, n))).size).toBe(serviceNames.length);
    for (const name of serviceNames) expect(commandOf(name)).toEqual(expect.arrayContaining([...processNodeFlags]));
    await shopOnce("processes-layout");
    launcher.interrupt();
    expect(await launcher.progress.waitForExit()).toEqual({ code: 0, signal: null });
    expect(processesUsing(dir!).map((p) => `${p.pid} ${p.cmdline}`)).toEqual([]);
  }, 300_000);

  it("names the service whose configuration is wrong when they share a process, and stops", async () => {
    launcher = startLauncher(dir!, launcher!.offset, { CHARGE_LEASE_MS: "soon" });
    const exit = await launcher.progress.waitForExit();
    const out = launcher.progress.output();
    expect(out).toMatch(/^payment failed: configuration error \(exit code 78\)\. Its log: \.data\/logs\/payment\.log$/m);
    expect(out).toContain('host: configuration error: payment: CHARGE_LEASE_MS must be an integer >= 100, got "soon"');
    expect(exit).toEqual({ code: 1, signal: null });
    expect(processesUsing(dir!).map((p) => `${p.pid} ${p.cmdline}`)).toEqual([]);
  }, 300_000);
});
