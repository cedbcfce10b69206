// The second baseline of the orders row: the same authenticated order read built from the bare
// parts alone, laid out as the mesh is, to tell what the architecture costs from what ShopMesh
// adds. Two processes, forked by bench/children.ts with a role:
//   order  grpc-js over mTLS serving GetOrder, one pg query (a named statement, as the mesh's) on
//          the order service's own PostgreSQL database, the order's own row mapping, and the
//          owner check;
//   edge   node:http, a bearer token looked up in a map (the gateway's verified-token cache hit),
//          a grpc-js call with a deadline to `order`, the answer as protobuf JSON.
// Left out, as ShopMesh does them: token verification on a cache miss, rate limits, validation,
// logs, metrics, traces, retries and breakers, health, error mapping beyond NOT_FOUND.
// Each answers { port } once listening.
import { createServer } from "node:http";
import * as grpc from "@grpc/grpc-js";
import { create, toJson } from "@bufbuild/protobuf";
import pg from "pg";
import { GetOrderResponseSchema, OrderService, type GetOrderRequest } from "../gen/shop/order/v1/order_pb.js";
import type { TlsFiles } from "../mesh/certs.js";
import { POOL_SIZE } from "../mesh/data/db.js";
import { grpcServiceDefinition } from "../mesh/rpc/grpc-adapter.js";
import { createStore } from "../services/order/store.js";

export interface BareOrderSetup {
  role: "order";
  tls: TlsFiles;
  databaseUrl: string;
}

export interface BareEdgeSetup {
  role: "edge";
  tls: TlsFiles;
  orderAddress: string;
  /** Bearer token → user id. */
  users: Record<string, string>;
}

const USER_HEADER = "x-user-id";
const DEADLINE_MS = 5_000;
const getOrder = grpcServiceDefinition(OrderService).getOrder!;

async function serveOrder({ tls, databaseUrl }: BareOrderSetup): Promise<number> {
  const pool = new pg.Pool({ connectionString: databaseUrl, max: POOL_SIZE });
  const names = new Map<string, string>();
  const store = createStore({
    query: async <T>(text: string, values?: unknown[]) => {
      if (!names.has(text)) names.set(text, `bare_${names.size}`);
      return (await pool.query({ name: names.get(text), text, values })).rows as T[];
    },
  } as Parameters<typeof createStore>[0]);
  const server = new grpc.Server();
  server.addService(grpcServiceDefinition(OrderService), {
    getOrder: (call: grpc.ServerUnaryCall<GetOrderRequest, unknown>, done: grpc.sendUnaryData<unknown>) => {
      store.byId(call.request.id).then(
        (stored) =>
          stored && stored.order.userId === call.metadata.get(USER_HEADER)[0]
            ? done(null, create(GetOrderResponseSchema, { order: stored.order }))
            : done({ code: grpc.status.NOT_FOUND, details: `order ${call.request.id} not found` }),
        () => done({ code: grpc.status.INTERNAL, details: "internal error" }),
      );
    },
  });
  const credentials = grpc.ServerCredentials.createSsl(Buffer.from(tls.ca), [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }], true);
  return new Promise((resolve, reject) => server.bindAsync("127.0.0.1:0", credentials, (err, port) => (err ? reject(err) : resolve(port))));
}

async function serveEdge({ tls, orderAddress, users }: BareEdgeSetup): Promise<number> {
  const client = new grpc.Client(orderAddress, grpc.credentials.createSsl(Buffer.from(tls.ca), Buffer.from(tls.key), Buffer.from(tls.cert)), {
    "grpc.ssl_target_name_override": "order",
  });
  const byToken = new Map(Object.entries(users));
  const send = (res: import("node:http").ServerResponse, status: number, body: string) =>
    res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(body) }).end(body);
  const server = createServer((req, res) => {
    const match = /^\/v1\/orders\/([^/?]+)$/.exec(req.url ?? "");
    if (req.method !== "GET" || !match) return send(res, 404, `{"code":"not_found"}`);
    const user = byToken.get(/^Bearer (\S+)$/.exec(req.headers.authorization ?? "")?.[1] ?? "");
    if (!user) return send(res, 401, `{"code":"unauthenticated"}`);
    const metadata = new grpc.Metadata();
    metadata.set(USER_HEADER, user);
    client.makeUnaryRequest(getOrder.path, getOrder.requestSerialize, getOrder.responseDeserialize, { id: match[1]! }, metadata, { deadline: Date.now() + DEADLINE_MS }, (err, answer) => {
      if (err) return send(res, err.code === grpc.status.NOT_FOUND ? 404 : 503, JSON.stringify({ code: grpc.status[err.code], message: err.details }));
      send(res, 200, JSON.stringify(toJson(GetOrderResponseSchema, answer as never)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return (server.address() as { port: number }).port;
}

process.once("message", async (setup: BareOrderSetup | BareEdgeSetup) => {
  process.send!({ port: await (setup.role === "order" ? serveOrder(setup) : serveEdge(setup)) });
});
process.on("disconnect", () => process.exit(0));
