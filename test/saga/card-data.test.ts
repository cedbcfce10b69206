// Card numbers stay in payment: after orders paid with every test card have gone through the real
// services (confirmed, declined, retried, cancelled), no card number is in any stream (events and
// dead letters), any outbox, or any database but payment's, and payment's holds none once every
// charge is decided. Each service has its own database on a real PostgreSQL server, so the scan
// reads every table as an operator would.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { OrderService, OrderStatus } from "../../gen/shop/order/v1/order_pb.js";
import { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";
import { DLQ_STREAM } from "../../mesh/events/events.js";
import { demoProducts } from "../../services/catalog/demo.js";
import { testCards } from "../../services/payment/processor.js";
import { scanDatabase, scanStreams } from "../support/card-scan.js";
import { eventually } from "../support/eventually.js";
import { startMesh, type TestMesh } from "../support/mesh.js";
import { cardToken } from "../support/payments.js";
import { startPostgres, type TestPostgres } from "../support/postgres.js";
import { rejection } from "../support/servers.js";

const services = ["identity", "catalog", "inventory", "order", "payment", "notification"] as const;
const database = (service: string) => `${service}_db`; // "order" is a reserved word
let pg: TestPostgres;
let mesh: TestMesh;
const ADA = uuidv7();

beforeAll(async () => {
  pg = await startPostgres({ maxConnections: 100 }); // six pools of up to ten
  for (const name of services) await pg.createDatabase(database(name));
  mesh = await startMesh({ env: Object.fromEntries(services.map((name) => [name, { DATABASE_URL: pg.url(database(name)) }])) });
}, 180_000);
afterAll(async () => {
  await mesh?.stop();
  await pg?.stop();
});

const address = { recipientName: "Ada Lovelace", addressLines: ["12 St James's Square"], city: "London", countryCode: "GB" };

describe("card numbers", () => {
  it("are in no stream, outbox, dead letter or database but payment's, and not there once charges are decided", async () => {
    const [orders, payments] = [await mesh.as(OrderService, "order", ADA), await mesh.as(PaymentService, "payment", ADA)];
    const place = async (card: string) =>
      (await orders.createOrder({ lines: [{ productId: demoProducts[2]!.id, quantity: 1 }], shippingAddress: address, paymentMethod: { token: await cardToken(payments, card) } })).order!;

    // A card number sent to order is refused before it is stored or published anywhere.
    const refused = await rejection(orders.createOrder({ lines: [{ productId: demoProducts[2]!.id, quantity: 1 }], shippingAddress: address, paymentMethod: { cardNumber: testCards.success } }));
    expect(refused.code).toBe(Code.InvalidArgument);
    expect(refused.rawMessage).toMatch(/payment_method\.card_number: card numbers are not accepted here: create a payment method first/);

    const placed = await Promise.all(Object.values(testCards).map(place));
    const cancelled = await place(testCards.success);
    await orders.cancelOrder({ id: cancelled.id, reason: "changed my mind" });
    const unused = await cardToken(payments, testCards.insufficientFunds); // a token no order uses: stays in payment until it expires

    const finals = await Promise.all([...placed, cancelled].map((o) =>
      eventually(async () => (await orders.getOrder({ id: o.id })).order!.status, (s) => s === OrderStatus.CONFIRMED || s === OrderStatus.CANCELLED, 30_000)));
    expect(finals.filter((s) => s === OrderStatus.CONFIRMED)).toHaveLength(2); // success and the retried processing error

    // A poison message on order's subject, so dead letters exist and are scanned too.
    const nc = await mesh.nats.connect();
    await nc.jetstream().publish("shop.order.created", new TextEncoder().encode("not an event"));
    const jsm = await nc.jetstreamManager();
    await eventually(async () => (await jsm.streams.info(DLQ_STREAM)).state.messages, (n) => n > 0, 60_000);

    // Payment holds the unused token's card, and no other once every charge is decided.
    const unusedOnly = { payment_methods: `token = '${unused}'` };
    await eventually(() => scanDatabase(pg.url(database("payment")), "payment", unusedOnly), (found) => found.length === 0, 60_000);
    const { messages, findings } = await scanStreams(nc);
    await nc.close();
    expect(messages).toBeGreaterThan(20);
    const elsewhere = await Promise.all(services.filter((s) => s !== "payment").map((name) => scanDatabase(pg.url(database(name)), name)));
    expect([...findings, ...elsewhere.flat()]).toEqual([]);
    expect(await scanDatabase(pg.url(database("payment")), "payment")).toEqual([{ where: "payment database, table payment_methods", rows: 1 }]);
  }, 120_000);
});
