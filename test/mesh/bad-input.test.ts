// Bad input hurts nobody but its sender: a NUL byte in any string field of any request is
// INVALID_ARGUMENT naming the field (databases refuse NUL in text and jsonb), and a request with
// hundreds of violations gets a bounded answer while calls sharing its connection go on.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { ScalarType, type DescMessage, type DescMethod, type DescService, type Message } from "@bufbuild/protobuf";
import { pathToString, reflect, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { Code, ConnectError } from "@connectrpc/connect";
import { pathFromViolationProto } from "@bufbuild/protovalidate";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { clientFor, rejection, sleep, startServer, type StubServer } from "../support/servers.js";

const NUL = "a\u0000b";

/** A place in a request where a string can go, as protovalidate names it, and how to put it there. */
interface StringSlot {
  path: string;
  fill(message: ReflectMessage, value: string): void;
}

/** Every string slot reachable in `schema`: fields, list items, map keys and values, nested messages. */
function stringSlots(schema: DescMessage, enclosing: string[] = []): StringSlot[] {
  if (enclosing.includes(schema.typeName)) return []; // recursive types: one level is proof enough
  const inner = (message: DescMessage) => stringSlots(message, [...enclosing, schema.typeName]);
  const slots: StringSlot[] = [];
  for (const f of schema.fields) {
    if (f.fieldKind === "scalar" && f.scalar === ScalarType.STRING) {
      slots.push({ path: f.name, fill: (m, v) => m.set(f, v) });
    } else if (f.fieldKind === "message") {
      for (const s of inner(f.message)) {
        slots.push({ path: `${f.name}.${s.path}`, fill: (m, v) => { const child = reflect(f.message); s.fill(child, v); m.set(f, child); } });
      }
    } else if (f.fieldKind === "list" && f.listKind === "scalar" && f.scalar === ScalarType.STRING) {
      slots.push({ path: `${f.name}[0]`, fill: (m, v) => m.get(f).add(v) });
    } else if (f.fieldKind === "list" && f.listKind === "message") {
      for (const s of inner(f.message)) {
        slots.push({ path: `${f.name}[0].${s.path}`, fill: (m, v) => { const child = reflect(f.message); s.fill(child, v); m.get(f).add(child); } });
      }
    } else if (f.fieldKind === "map") {
      if (f.mapKey === ScalarType.STRING) slots.push({ path: `${f.name}[`, fill: (m, v) => m.get(f).set(v, f.mapKind === "message" ? reflect(f.message) : f.mapKind === "scalar" && f.scalar === ScalarType.STRING ? "v" : undefined) });
      if (f.mapKind === "scalar" && f.scalar === ScalarType.STRING) slots.push({ path: `${f.name}["k"]`, fill: (m, v) => m.get(f).set("k", v) });
    }
  }
  return slots;
}

/** Every service generated from our contracts (gen/shop/; gen/health is grpc's), with the identity that serves it. */
async function generatedServices(): Promise<{ service: DescService; identity: string }[]> {
  const root = join(process.cwd(), "gen", "shop");
  const files = (await readdir(root, { recursive: true })).filter((f) => f.endsWith("_pb.ts"));
  const found: { service: DescService; identity: string }[] = [];
  for (const file of files) {
    for (const value of Object.values(await import(pathToFileURL(join(root, file)).href))) {
      const desc = value as DescService;
      if (desc?.kind === "service") found.push({ service: desc, identity: desc.typeName.split(".")[1]! });
    }
  }
  return found;
}

async function call(client: Record<string, unknown>, method: DescMethod, request: Message): Promise<unknown> {
  const fn = client[method.localName] as (req: Message, opts: object) => unknown;
  if (method.methodKind === "unary") return fn(request, { timeoutMs: 5_000 });
  for await (const _ of fn(request, { timeoutMs: 5_000 }) as AsyncIterable<unknown>) break;
  return undefined;
}

const violatedPaths = (method: DescMethod, err: ConnectError) =>
  err.findDetails(ViolationsSchema).flatMap((d) => d.violations.map((v) => (v.field ? pathToString(pathFromViolationProto(method.input, v.field)) : "")));

let pki: TestPki;
const servers: StubServer[] = [];
beforeAll(async () => {
  pki = await createTestPki();
});
afterAll(async () => {
  await Promise.all(servers.map((s) => s.drain()));
});

describe("NUL bytes", () => {
  it("are INVALID_ARGUMENT naming the field, in every string field of every request of every service", async () => {
    const services = await generatedServices();
    expect(services.map((s) => s.identity).sort()).toEqual(["catalog", "identity", "inventory", "notification", "order", "payment"]);
    const missed: string[] = [];
    let checked = 0;
    for (const { service, identity } of services) {
      // No handlers: a request that passes validation answers UNIMPLEMENTED, and is reported.
      const server = await startServer(pki, identity, service, {});
      servers.push(server);
      const client = (await clientFor(pki, service, identity, [server.address], { policy: { maxAttempts: 1 } })) as unknown as Record<string, unknown>;
      for (const method of service.methods) {
        for (const slot of stringSlots(method.input)) {
          const request = reflect(method.input);
          slot.fill(request, NUL);
          const err = await rejection(call(client, method, request.message));
          const paths = violatedPaths(method, err);
          const named = slot.path.endsWith("[") ? paths.some((p) => p.startsWith(slot.path)) : paths.includes(slot.path);
          if (err.code !== Code.InvalidArgument || !named) missed.push(`${method.parent.name}.${method.name} ${slot.path}: ${Code[err.code]} ${err.rawMessage}`);
          checked++;
        }
      }
      (client.close as () => void)();
    }
    expect(missed).toEqual([]);
    expect(checked).toBeGreaterThan(40);
  });

  it("name nested and repeated fields the way protovalidate does", async () => {
    const { OrderService } = await import("../../gen/shop/order/v1/order_pb.js");
    const server = await startServer(pki, "order", OrderService, {});
    servers.push(server);
    const client = await clientFor(pki, OrderService, "order", [server.address]);
    const err = await rejection(
      client.createOrder({
        lines: [{ productId: "018f0000-0000-7000-8000-000000000002", quantity: 1 }],
        shippingAddress: { recipientName: "A", addressLines: ["1 Main St", "c/o \u0000"], city: "Town", postalCode: "12345", countryCode: "DE" },
      }),
    );
    expect(err.code).toBe(Code.InvalidArgument);
    const paths = violatedPaths(OrderService.method.createOrder, err);
    expect(paths[0]).toBe("shipping_address.address_lines[1]"); // NUL first, then the contract's own rules
    expect(paths.filter((p) => p.startsWith("shipping_address"))).toEqual(["shipping_address.address_lines[1]"]);
    expect(err.rawMessage).toContain("shipping_address.address_lines[1]: must not contain NUL");
    client.close();
  });
});

describe("a request with hundreds of violations", () => {
  it("gets INVALID_ARGUMENT at once with a bounded detail, and calls sharing the connection go on", async () => {
    const server = await startServer(pki, "catalog", CatalogService, {
      async getProduct(req) {
        await sleep(100);
        return { product: { id: req.id } };
      },
      batchGetProducts: () => ({ products: [] }),
    });
    servers.push(server);
    const client = await clientFor(pki, CatalogService, "catalog", [server.address], { policy: { timeoutMs: 5_000, maxAttempts: 1 } });
    const id = "018f0000-0000-7000-8000-000000000001";
    await client.getProduct({ id }); // the connection is up and shared by what follows

    const innocent = Array.from({ length: 20 }, () => client.getProduct({ id }).then(() => "ok", (e) => Code[ConnectError.from(e).code]));
    const started = Date.now();
    const err = await rejection(client.batchGetProducts({ ids: Array.from({ length: 500 }, (_, i) => String(i)) }));
    const took = Date.now() - started;

    expect(err.code).toBe(Code.InvalidArgument);
    expect(took).toBeLessThan(2_000);
    const listed = err.findDetails(ViolationsSchema).flatMap((d) => d.violations);
    expect(listed.length).toBeGreaterThan(0);
    expect(listed.length).toBeLessThanOrEqual(20);
    expect(err.rawMessage).toMatch(/and \d+ more/);
    expect(err.rawMessage.length).toBeLessThanOrEqual(2_048);
    expect(await Promise.all(innocent)).toEqual(Array(20).fill("ok"));
    expect((await client.getProduct({ id })).product?.id).toBe(id); // and the connection still serves
    client.close();
  });
});

describe("an error of any size from a handler", () => {
  it("is answered with bounded trailers, and the connection goes on", async () => {
    const server = await startServer(pki, "catalog", CatalogService, {
      getProduct(req) {
        if (req.id.endsWith("1")) return { product: { id: req.id } };
        const err = new ConnectError(`no luck ${"é ".repeat(50_000)}`, Code.FailedPrecondition);
        err.metadata.set("x-handler-note", "n".repeat(100_000));
        throw err;
      },
    });
    servers.push(server);
    const client = await clientFor(pki, CatalogService, "catalog", [server.address], { policy: { timeoutMs: 5_000, maxAttempts: 1 } });
    const good = "018f0000-0000-7000-8000-000000000001";
    const err = await rejection(client.getProduct({ id: "018f0000-0000-7000-8000-000000000002" }));
    expect(err.code).toBe(Code.FailedPrecondition);
    expect(err.rawMessage).toMatch(/^no luck é é .*…$/);
    expect(encodeURIComponent(err.rawMessage).length).toBeLessThanOrEqual(2_048);
    expect((await client.getProduct({ id: good })).product?.id).toBe(good);
    client.close();
  });
});

describe("a database error", () => {
  it("reaches the caller as INTERNAL with a request id, never its text", async () => {
    // A real pg pool whose server is not there: its error names the internal address.
    const { openDb } = await import("../../mesh/data/db.js");
    const db = await openDb({ url: `postgres://shop@127.0.0.1:${await freePort()}/shop`, statementTimeoutMs: 2_000 });
    const server = await startServer(pki, "catalog", CatalogService, {
      async getProduct(req) {
        await db.query("SELECT secret_column FROM no_such_table WHERE id = $1", [req.id]);
        return {};
      },
    });
    servers.push(server);
    const client = await clientFor(pki, CatalogService, "catalog", [server.address]);
    const err = await rejection(client.getProduct({ id: "018f0000-0000-7000-8000-000000000001" }, { headers: { "x-request-id": "req-42" } }));
    expect(err.code).toBe(Code.Internal);
    expect(err.rawMessage).toBe("internal error (request id req-42)");
    expect(err.details).toEqual([]);
    expect(err.rawMessage).not.toMatch(/127\.0\.0\.1|ECONNREFUSED|SELECT/);
    client.close();
    await db.close();
  });
});
