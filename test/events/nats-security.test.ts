// NATS is locked: only certificates of the mesh CA that map to a NATS user get in, and each
// service may publish only its own events and read only the streams it consumes (permissions
// generated from the topology). Real nats-server, real TLS, real certificates.
import { connect as tcpConnect } from "node:net";
import { connect as tlsConnect, type ConnectionOptions as TlsOptions } from "node:tls";
import type { Duplex } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import type { ConnectionOptions, NatsConnection } from "nats";
import { PaymentCapturedSchema } from "../../gen/shop/payment/v1/events_pb.js";
import { ProductUpdatedSchema } from "../../gen/shop/catalog/v1/events_pb.js";
import { createCa } from "../../mesh/certs.js";
import { encodeEvent, ensureStreams, publishEncoded, streamName } from "../../mesh/events/events.js";
import { notification } from "../../services/notification/notification.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { startNats, type NatsTestServer } from "../support/processes.js";
import { startTestService } from "../support/service.js";
import { eventually } from "../support/eventually.js";

let pki: TestPki;
let nats: NatsTestServer;
let operator: NatsConnection;
const opened: NatsConnection[] = [];

/** Connects as a mesh identity exactly as a service does: its certificate, its own inbox prefix. */
async function connectAs(identity: string, extra: Partial<ConnectionOptions> = {}): Promise<NatsConnection> {
  const nc = await nats.connect({ as: identity, ...extra });
  opened.push(nc);
  return nc;
}

/**
 * Talks to nats-server by hand, as any program on the network could: reads its INFO, upgrades to
 * TLS with `tls` (or stays in plain text without it), sends CONNECT and PING, and returns the
 * server's first answer (PONG when let in, -ERR …) or the TLS error that ended the session.
 */
async function session(tls?: TlsOptions): Promise<string> {
  const socket = tcpConnect(nats.port, "127.0.0.1");
  const firstLine = (stream: Duplex) =>
    new Promise<string>((resolve) => {
      let seen = "";
      const onData = (d: Buffer) => {
        seen += d.toString();
        if (!seen.includes("\r\n")) return;
        stream.off("data", onData);
        resolve(seen.slice(0, seen.indexOf("\r\n")));
      };
      stream.on("data", onData);
      stream.once("error", (err) => resolve(`error: ${err.message}`));
      stream.once("close", () => resolve(seen || "closed"));
    });
  try {
    expect(await firstLine(socket)).toMatch(/^INFO .*"tls_required":true/);
    let stream: Duplex = socket;
    if (tls) {
      stream = tlsConnect({ socket, ...tls });
      const handshake = await new Promise<string>((resolve) => (stream.once("secureConnect", () => resolve("ok")), stream.once("error", (err) => resolve(`error: ${err.message}`))));
      if (handshake !== "ok") return handshake;
    }
    const answer = firstLine(stream);
    stream.write('CONNECT {"verbose":false,"pedantic":false,"protocol":1}\r\nPING\r\n');
    return await answer;
  } finally {
    socket.destroy();
  }
}

/** Resolves to the error a promise rejects with; fails when it resolves. */
async function refusal(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (err) {
    return err as Error;
  }
  throw new Error("expected a refusal, and it succeeded");
}

beforeAll(async () => {
  pki = await createTestPki();
  nats = await startNats(pki);
  operator = await connectAs("client");
  const jsm = await operator.jetstreamManager();
  for (const [owner, subjects] of [["payment", ["shop.payment.>"]], ["catalog", ["shop.product.>"]], ["order", ["shop.order.>"]]] as const) {
    await ensureStreams(jsm, owner, subjects);
  }
});
afterAll(async () => {
  await Promise.all(opened.map((nc) => nc.close()));
  await nats?.stop();
});

/** The subject of the first message a subscription receives, or the error that ended it. */
async function firstMessage(nc: NatsConnection, subject: string): Promise<string> {
  try {
    for await (const m of nc.subscribe(subject)) return m.subject;
    return "subscription ended";
  } catch (err) {
    return (err as Error).message;
  }
}

const messagesIn = async (stream: string) => (await (await operator.jetstreamManager()).streams.info(stream)).state.messages;

describe("who may connect to NATS", () => {
  it("refuses a plain-text connection and a TLS connection without a client certificate", async () => {
    const { ca } = await pki.tls("client");
    expect(await session()).toMatch(/^-ERR 'Secure Connection - TLS Required'|^closed$/); // plain text ends the session
    expect(await session({ ca })).toMatch(/alert (bad certificate|certificate required)/i);
  });

  it("refuses a certificate from another CA, even one naming a mesh identity, and lets the real one in", async () => {
    const forged = await (await createCa("Rogue CA")).issue("client");
    const { ca, cert, key } = await pki.tls("client");
    expect(await session({ ca, cert: forged.cert, key: forged.key })).toMatch(/alert (unknown ca|bad certificate)/i);
    expect(await session({ ca, cert, key })).toBe("PONG");
  });

  it("refuses a mesh certificate that maps to no NATS user", async () => {
    const { ca, cert, key } = await pki.tls("intruder");
    expect(await session({ ca, cert, key })).toMatch(/^-ERR 'Authorization Violation'/);
    expect((await refusal(connectAs("intruder"))).message).toMatch(/authorization/i);
  });
});

describe("what each service may do", () => {
  it("lets catalog publish its own events but not shop.payment.captured", async () => {
    const catalog = await connectAs("catalog");
    const js = catalog.jetstream();
    const ack = await publishEncoded(js, encodeEvent(ProductUpdatedSchema, { productId: "p1" }, { source: "catalog" }));
    expect(ack.stream).toBe(streamName("catalog"));

    const before = await messagesIn(streamName("payment"));
    const forged = encodeEvent(PaymentCapturedSchema, { orderId: "o1", paymentId: "pay1" }, { source: "payment" });
    const err = await refusal(publishEncoded(js, forged, 2_000));
    expect(err.message).toMatch(/permissions violation/i);
    catalog.publish(forged.subject, forged.payload); // a plain publish, no ack asked for
    await catalog.flush();
    expect(await messagesIn(streamName("payment"))).toBe(before);
  });

  it("keeps notification out of SHOP_PAYMENT: no consumer, no message reads, no subscription", async () => {
    const before = await messagesIn(streamName("payment"));
    const payment = await connectAs("payment");
    await publishEncoded(payment.jetstream(), encodeEvent(PaymentCapturedSchema, { orderId: "o2", paymentId: "pay2" }, { source: "payment" }));
    expect(await messagesIn(streamName("payment"))).toBe(before + 1);

    const spy = await connectAs("notification");
    const jsm = await spy.jetstreamManager();
    await refusal(jsm.consumers.add(streamName("payment"), { durable_name: "notification-spy", filter_subject: "shop.payment.captured" }));
    await refusal(jsm.streams.getMessage(streamName("payment"), { seq: before + 1 }));
    await refusal(jsm.streams.info(streamName("payment")));
    // Nor another service's durable consumer on a stream it may read: payment's refund consumer on SHOP_ORDER.
    await refusal(spy.jetstream().consumers.get(streamName("order"), "payment-refund"));

    const received = firstMessage(spy, "shop.payment.>");
    await publishEncoded(payment.jetstream(), encodeEvent(PaymentCapturedSchema, { orderId: "o3", paymentId: "pay3" }, { source: "payment" }));
    expect(await received).toMatch(/permissions violation/i);
  });

  it("lets a service dead-letter its own consumers' messages only", async () => {
    const js = (await connectAs("notification")).jetstream();
    const letter = (durable: string, subject: string) => publishEncoded(js, { ...encodeEvent(ProductUpdatedSchema, {}, { source: "test" }), subject: `dlq.${durable}.${subject}` }, 2_000);
    expect((await letter("notification-welcome", "shop.user.registered")).stream).toBe("SHOP_DLQ");
    expect((await refusal(letter("payment-refund", "shop.order.cancelled"))).message).toMatch(/permissions violation/i);
  });

  it("keeps one service's replies from another: payment cannot subscribe to order's inbox", async () => {
    const payment = await connectAs("payment");
    expect(await firstMessage(payment, "_INBOX_order.>")).toMatch(/permissions violation/i);
  });
});

describe("a service on the locked NATS", () => {
  // A generous bound: opening the embedded database takes seconds, tens on a busy machine.
  it("serves gRPC while a stream it consumes does not exist yet, and starts consuming once its owner creates it", { timeout: 120_000 }, async () => {
    // notification consumes identity's and order's events; identity has never started here.
    const svc = await startTestService(notification, pki, { NATS_URL: nats.url, DEAD_LETTERS_MAX_AGE_HOURS: "48" });
    try {
      let ready = false;
      void svc.eventing.ready.then(() => (ready = true));
      const client = await svc.client();
      try {
        const outcome = await client.listNotifications({}).then(() => "answered", (err) => ConnectError.from(err).code);
        expect(outcome).not.toBe(Code.Unavailable); // it answers (a service caller without a user may be refused)
      } finally {
        client.close();
      }
      expect(ready).toBe(false);
      await ensureStreams(await operator.jetstreamManager(), "identity", ["shop.user.>"], { deadLetters: false }); // what identity does when it starts
      await eventually(() => ready, Boolean, 20_000);
      // It made the dead-letter stream's limits what its configuration says.
      expect((await (await operator.jetstreamManager()).streams.info("SHOP_DLQ")).config.max_age / 3_600e9).toBe(48);
    } finally {
      await svc.stop();
    }
  });
});
