// The client's resilience policy against real servers: retries only where a retry is safe,
// deadlines that shrink as a call travels, a breaker that opens and recovers, round robin.
import { afterEach, beforeAll, describe, expect, it } from "vitest";
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { OrderService } from "../../gen/shop/order/v1/order_pb.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { clientFor, rejection, sleep, startServer, type StubServer } from "../support/servers.js";

let pki: TestPki;
const running: StubServer[] = [];
async function start<S extends DescService>(pki: TestPki, identity: string, service: S, impl: Partial<ServiceImpl<S>>) {
  const server = await startServer(pki, identity, service, impl);
  running.push(server);
  return server;
}

beforeAll(async () => {
  pki = await createTestPki();
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((s) => s.drain()));
});

const unavailable = () => new ConnectError("try again", Code.Unavailable);
const fast = { initialBackoffMs: 5, maxBackoffMs: 20 };

describe("retries", () => {
  it("retries an idempotent (NO_SIDE_EFFECTS) call that failed with UNAVAILABLE", async () => {
    let calls = 0;
    const server = await start(pki, "identity", IdentityService, {
      getUser(req) {
        if (++calls === 1) throw unavailable();
        return { user: { id: req.id } };
      },
    });
    const client = await clientFor(pki, IdentityService, "identity", [server.address], { policy: fast });
    const res = await client.getUser({ id: "018f0000-0000-7000-8000-000000000001" });
    expect(res.user?.id).toBe("018f0000-0000-7000-8000-000000000001");
    expect(calls).toBe(2);
    client.close();
  });

  it("does not retry a call with side effects", async () => {
    let calls = 0;
    const server = await start(pki, "identity", IdentityService, {
      register() {
        calls++;
        throw unavailable();
      },
    });
    const client = await clientFor(pki, IdentityService, "identity", [server.address], { policy: fast });
    const err = await rejection(client.register({ email: "a@b.co", password: "password1", displayName: "A" }));
    expect(err.code).toBe(Code.Unavailable);
    expect(calls).toBe(1);
    client.close();
  });

  it("retries a call with side effects when the request carries an idempotency key, and only then", async () => {
    let calls = 0;
    const server = await start(pki, "order", OrderService, {
      createOrder() {
        if (++calls % 2 === 1) throw unavailable();
        return { order: { id: "o1" } };
      },
    });
    const client = await clientFor(pki, OrderService, "order", [server.address], { policy: fast });
    const order = {
      lines: [{ productId: "018f0000-0000-7000-8000-000000000002", quantity: 1 }],
      shippingAddress: { recipientName: "A", addressLines: ["1 Main St"], city: "Town", postalCode: "12345", countryCode: "DE" },
      paymentMethod: { token: "pm_abcdefghijklmnopqrstuvwxyz012345" },
    };
    const withKey = await client.createOrder({ ...order, idempotencyKey: "key-1" });
    expect(withKey.order?.id).toBe("o1");
    expect(calls).toBe(2);
    const err = await rejection(client.createOrder(order));
    expect(err.code).toBe(Code.Unavailable);
    expect(calls).toBe(3);
    client.close();
  });

  it("does not retry errors that are not UNAVAILABLE", async () => {
    let calls = 0;
    const server = await start(pki, "identity", IdentityService, {
      getUser() {
        calls++;
        throw new ConnectError("no such user", Code.NotFound);
      },
    });
    const client = await clientFor(pki, IdentityService, "identity", [server.address], { policy: fast });
    expect((await rejection(client.getUser({ id: "018f0000-0000-7000-8000-000000000001" }))).code).toBe(Code.NotFound);
    expect(calls).toBe(1);
    client.close();
  });
});

describe("deadlines", () => {
  it("propagates the caller's remaining deadline across two hops", async () => {
    let seenByB: number | undefined;
    let abortedInB: unknown;
    const b = await start(pki, "identity", IdentityService, {
      async getUser(req, ctx) {
        seenByB = ctx.timeoutMs();
        // Work that takes longer than the caller allows, stopping when the call's signal says so.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 3_000);
          ctx.signal.addEventListener("abort", () => (clearTimeout(timer), resolve()));
        });
        abortedInB = ctx.signal.reason;
        return { user: { id: req.id } };
      },
    });
    const toB = await clientFor(pki, IdentityService, "identity", [b.address], { as: "catalog", policy: { timeoutMs: 10_000 } });
    const a = await start(pki, "catalog", IdentityService, {
      async getUser(req) {
        await sleep(100);
        return toB.getUser({ id: req.id }); // no timeout given: inherits what is left of ours
      },
    });
    const toA = await clientFor(pki, IdentityService, "catalog", [a.address]);
    // Connections up first: on a loaded machine two TLS handshakes can eat most of an 800 ms budget.
    await rejection(toB.getUser({ id: "018f0000-0000-7000-8000-000000000001" }, { timeoutMs: 50 }));
    await rejection(toA.getUser({ id: "018f0000-0000-7000-8000-000000000001" }, { timeoutMs: 50 }));
    await sleep(100);
    [seenByB, abortedInB] = [undefined, undefined];
    const started = Date.now();
    const err = await rejection(toA.getUser({ id: "018f0000-0000-7000-8000-000000000001" }, { timeoutMs: 800 }));
    const took = Date.now() - started;
    expect(err.code).toBe(Code.DeadlineExceeded);
    expect(seenByB).toBeGreaterThan(0);
    expect(seenByB).toBeLessThanOrEqual(700); // 800 ms minus A's 100 ms of work
    expect(took).toBeLessThan(2_500); // failed at the caller's deadline, not B's 3 s or A's 10 s default
    await sleep(50);
    expect(abortedInB).toBeInstanceOf(ConnectError); // B's handler was told to stop
    toA.close();
    toB.close();
  });
});

describe("circuit breaker", () => {
  it("opens after consecutive failures, fails fast while open, and closes after a successful probe", async () => {
    let healthy = false;
    let calls = 0;
    const server = await start(pki, "identity", IdentityService, {
      getJwks() {
        calls++;
        if (!healthy) throw unavailable();
        return { keys: [] };
      },
    });
    const client = await clientFor(pki, IdentityService, "identity", [server.address], {
      policy: { ...fast, maxAttempts: 1, breakerFailures: 3, breakerHalfOpenAfterMs: 300 },
    });
    for (let i = 0; i < 3; i++) expect((await rejection(client.getJwks({}))).code).toBe(Code.Unavailable);
    expect(calls).toBe(3);

    const open = await rejection(client.getJwks({}));
    expect(open.code).toBe(Code.Unavailable);
    expect(open.message).toMatch(/circuit open/);
    expect(calls).toBe(3); // failed fast: the server never saw it

    healthy = true;
    await sleep(350);
    await client.getJwks({}); // the half-open probe goes through and closes the breaker
    await client.getJwks({});
    expect(calls).toBe(5);
    client.close();
  });
});

describe("circuit breaker and the caller's own deadline", () => {
  it("does not count calls the caller gave no time to as upstream failures", async () => {
    let calls = 0;
    const server = await start(pki, "identity", IdentityService, { getJwks: () => (calls++, { keys: [] }) });
    const client = await clientFor(pki, IdentityService, "identity", [server.address], { policy: { breakerFailures: 2 } });
    for (let i = 0; i < 4; i++) expect((await rejection(client.getJwks({}, { timeoutMs: 0 }))).code).toBe(Code.DeadlineExceeded);
    await client.getJwks({}); // the breaker is still closed
    expect(calls).toBe(1);
    client.close();
  });
});

describe("errors crossing two hops", () => {
  it("pass the upstream's code, message and details on, but not its other trailers", async () => {
    const b = await start(pki, "identity", IdentityService, {
      getUser() {
        throw new ConnectError("no such user", Code.NotFound, { "x-upstream-secret": "s3cret" });
      },
    });
    const toB = await clientFor(pki, IdentityService, "identity", [b.address], { as: "catalog" });
    let seenByA: ConnectError | undefined;
    const a = await start(pki, "catalog", IdentityService, {
      async getUser(req) {
        try {
          return await toB.getUser({ id: req.id });
        } catch (err) {
          seenByA = ConnectError.from(err);
          throw err; // rethrown as is: its metadata would become our trailers
        }
      },
    });
    const toA = await clientFor(pki, IdentityService, "catalog", [a.address]);
    const err = await rejection(toA.getUser({ id: "018f0000-0000-7000-8000-000000000001" }));
    expect([err.code, err.rawMessage]).toEqual([Code.NotFound, "no such user"]);
    expect(seenByA?.metadata.get("x-upstream-secret")).toBeNull();
    expect([...(seenByA?.metadata.keys() ?? [])]).toEqual([]);
    toA.close();
    toB.close();
  });
});

describe("server streams", () => {
  it("stop the handler and free the server when the client stops reading", async () => {
    let handlerEnded = false;
    let sent = 0;
    const server = await start(pki, "order", OrderService, {
      async *watchOrder(req, ctx) {
        try {
          while (!ctx.signal.aborted) {
            yield { order: { id: req.id } };
            sent++;
            await sleep(20);
          }
        } finally {
          handlerEnded = true;
        }
      },
    });
    const client = await clientFor(pki, OrderService, "order", [server.address]);
    let received = 0;
    for await (const update of client.watchOrder({ id: "018f0000-0000-7000-8000-000000000003" })) {
      expect(update.order?.id).toBe("018f0000-0000-7000-8000-000000000003");
      if (++received === 3) break;
    }
    await sleep(200);
    expect(handlerEnded).toBe(true);
    expect(sent).toBeLessThan(10);
    const started = Date.now();
    await running.splice(running.indexOf(server), 1)[0]!.drain();
    expect(Date.now() - started).toBeLessThan(1_500); // no stream left to wait for
    client.close();
  });
});

describe("load balancing", () => {
  it("spreads calls round robin over several addresses", async () => {
    const hits = [0, 0];
    const servers = await Promise.all(
      hits.map((_, i) => start(pki, "identity", IdentityService, { getJwks: () => (hits[i]!++, { keys: [] }) })),
    );
    const client = await clientFor(pki, IdentityService, "identity", servers.map((s) => s.address));
    for (let i = 0; i < 20; i++) await client.getJwks({});
    expect(hits[0]! + hits[1]!).toBe(20);
    expect(Math.min(...hits)).toBeGreaterThanOrEqual(5);
    client.close();
  });
});
