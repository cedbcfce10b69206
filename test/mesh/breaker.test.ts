// What a circuit breaker counts: only failures that say the upstream itself is unhealthy (it cannot
// be reached, or does not answer in time). Answers the upstream chose to give (INTERNAL for one bad
// request, INVALID_ARGUMENT, an UNAVAILABLE it relays from its own upstream) never open it, so one
// client's bad input or one dead service further down does not cut everyone off from a healthy one.
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { eventually } from "../support/eventually.js";
import { clientFor, rejection, sleep, startServer, type StubServer } from "../support/servers.js";
import { Breaker, CircuitOpenError } from "../../mesh/rpc/breaker.js";

let pki: TestPki;
const running: StubServer[] = [];
beforeAll(async () => {
  pki = await createTestPki();
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.drain()));
});

async function start(identity: string, impl: Partial<ServiceImpl<typeof CatalogService>>, port?: number) {
  const server = await startServer(pki, identity, CatalogService, impl, port === undefined ? {} : { port });
  running.push(server);
  return server;
}

const id = (n: number) => `018f0000-0000-7000-8000-${String(n).padStart(12, "0")}`;

describe("the breaker ignores answers the upstream chose to give", () => {
  it("INTERNAL and INVALID_ARGUMENT answers never open it", async () => {
    let calls = 0;
    const server = await start("catalog", {
      getProduct(req) {
        calls++;
        if (req.id === id(500)) throw new Error("invalid byte sequence for encoding UTF8: 0x00"); // a bug: INTERNAL
        return { product: { id: req.id } };
      },
    });
    const client = await clientFor(pki, CatalogService, "catalog", [server.address], { policy: { breakerFailures: 3, maxAttempts: 1 } });
    for (let i = 0; i < 10; i++) {
      expect((await rejection(client.getProduct({ id: id(500) }))).code).toBe(Code.Internal);
      expect((await rejection(client.getProduct({ id: "not-a-uuid" }))).code).toBe(Code.InvalidArgument);
    }
    expect((await client.getProduct({ id: id(1) })).product?.id).toBe(id(1));
    expect(calls).toBe(11);
    client.close();
  });
});

describe("a chain A → B → C where C stops for 2 s", () => {
  it("does not open A's breaker toward B, and calls succeed again soon after C returns", async () => {
    const catalogImpl = { getProduct: (req: { id: string }) => ({ product: { id: req.id } }) };
    let c = await start("catalog", catalogImpl);
    const cPort = c.port;
    const toC = await clientFor(pki, CatalogService, "catalog", [c.address], { as: "order" });
    const b = await start("order", { getProduct: (req) => toC.getProduct({ id: req.id }) }); // relays C's answer
    const toB = await clientFor(pki, CatalogService, "order", [b.address], { as: "gateway" });
    expect((await toB.getProduct({ id: id(1) })).product?.id).toBe(id(1));

    // A calls B without pause throughout, one call at a time, as a steady user would.
    const results: { at: number; ok: boolean; code?: string; message?: string }[] = [];
    let stop = false;
    const load = (async () => {
      while (!stop) {
        const at = Date.now();
        try {
          await toB.getProduct({ id: id(1) });
          results.push({ at, ok: true });
        } catch (err) {
          const e = ConnectError.from(err);
          results.push({ at, ok: false, code: Code[e.code], message: e.rawMessage });
        }
        await sleep(20);
      }
    })();

    await sleep(200);
    const stopped = Date.now();
    await c.drain();
    running.splice(running.indexOf(c), 1);
    await sleep(2_000); // the outage
    c = await start("catalog", catalogImpl, cPort);
    const returned = Date.now();
    const firstSuccess = await eventually(() => results.find((r) => r.ok && r.at >= returned), (r) => r !== undefined, 15_000);
    await sleep(500);
    stop = true;
    await load;

    const failures = results.filter((r) => !r.ok);
    const recoveryMs = firstSuccess!.at - returned;
    const lastFailure = failures.at(-1)?.at ?? stopped;
    console.log(`chain A→B→C, C down 2 s: ${failures.length} failed calls at A, A served again ${recoveryMs} ms after C returned, failures spanned ${lastFailure - stopped} ms`);
    expect(failures.length).toBeGreaterThan(0); // the outage was real
    expect(failures.map((f) => f.message).filter((m) => /circuit open for upstream order/.test(m!))).toEqual([]);
    expect(failures.every((f) => f.code === "Unavailable")).toBe(true);
    expect(recoveryMs).toBeLessThan(3_000);
    expect(results.filter((r) => r.at > firstSuccess!.at).every((r) => r.ok)).toBe(true); // and it stays up
    toB.close();
    toC.close();
  });
});

describe("the breaker's states", () => {
  const unhealthy = new Error("unreachable");
  const breaker = () => new Breaker(2, 100, (err) => err === unhealthy);
  const fail = (err: unknown) => () => Promise.reject(err);
  const settle = (p: Promise<unknown>) => p.then((v) => v, (e: unknown) => e);

  it("counts only consecutive counted failures; other errors neither count nor reset", async () => {
    const b = breaker();
    await settle(b.execute(fail(unhealthy)));
    await settle(b.execute(fail(new Error("an answer"))));
    expect(b.isOpen).toBe(false);
    await settle(b.execute(async () => "ok")); // resets
    await settle(b.execute(fail(unhealthy)));
    expect(b.isOpen).toBe(false);
    await settle(b.execute(fail(unhealthy)));
    expect(b.isOpen).toBe(true);
    expect(await settle(b.execute(async () => "never runs"))).toBeInstanceOf(CircuitOpenError);
  });

  it("lets one probe through after the wait while others wait for it; a failed probe opens it again", async () => {
    const b = breaker();
    for (let i = 0; i < 2; i++) await settle(b.execute(fail(unhealthy)));
    await sleep(120);
    let release!: (v: string) => void;
    const probe = b.execute(() => new Promise<string>((r) => (release = r)));
    let ran = 0;
    const waiting = b.execute(async () => (ran++, "after the probe"));
    await sleep(10);
    expect(ran).toBe(0); // held until the probe settles
    release("probe");
    expect(await probe).toBe("probe");
    expect(await waiting).toBe("after the probe");

    for (let i = 0; i < 2; i++) await settle(b.execute(fail(unhealthy)));
    await sleep(120);
    expect(await settle(b.execute(fail(unhealthy)))).toBe(unhealthy); // the probe failed
    expect(b.isOpen).toBe(true);
  });

  it("a probe that throws before it starts does not leave the breaker half-open", async () => {
    const b = breaker();
    for (let i = 0; i < 2; i++) await settle(b.execute(fail(unhealthy)));
    await sleep(120);
    expect(await settle(b.execute(() => { throw new Error("no time left"); }))).toBeInstanceOf(Error);
    expect(await b.execute(async () => "closed")).toBe("closed");
  });
});
