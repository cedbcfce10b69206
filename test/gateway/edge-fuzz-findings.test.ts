// What `npm run fuzz` (seed 12345) found at the edge after it was hardened, each reproduced here
// on raw sockets: bodies that do not decode (Connect, gRPC-Web), a compressed flag with no
// encoding, refusals connect-node answers with an empty body (405, 415), the CONNECT method, a
// chunked body that never ends, and keep-alive connections read out of step. The gateway runs
// alone: no request here may need a service.
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningGateway } from "../../gateway/gateway.js";
import { startLoneGateway, type LoneGateway } from "../support/lone-gateway.js";
import { RawConnection, type RawResponse } from "../support/raw-http.js";

const BODY_IDLE_TIMEOUT_MS = 1_000;
let lone: LoneGateway;
let gateway: RunningGateway;

beforeAll(async () => {
  lone = await startLoneGateway({ MAX_BODY_BYTES: "1024", BODY_IDLE_TIMEOUT_MS: String(BODY_IDLE_TIMEOUT_MS) });
  gateway = lone.gateway;
}, 60_000);
afterAll(() => lone?.stop());

/** Sends each request on one keep-alive connection and reads its answer (bounded generously). */
async function exchange(requests: (string | Buffer)[], timeoutMs = 10_000): Promise<{ responses: RawResponse[]; closed: boolean; answeredMs: number[] }> {
  const conn = new RawConnection(gateway.port);
  await conn.opened;
  const responses: RawResponse[] = [];
  const answeredMs: number[] = [];
  try {
    for (const request of requests) {
      const bytes = Buffer.isBuffer(request) ? request : Buffer.from(request, "latin1");
      const sent = Date.now();
      await conn.write(bytes);
      const outcome = await conn.next(timeoutMs, bytes.subarray(0, 5).toString("latin1") === "HEAD ");
      if (outcome.kind !== "response") throw new Error(`request ${responses.length + 1}: ${outcome.kind} ${JSON.stringify(outcome.partial)}`);
      responses.push(outcome.response);
      answeredMs.push(Date.now() - sent);
    }
    // The server closes a connection it answered with "connection: close" (bounded, never a fixed sleep).
    for (const end = Date.now() + timeoutMs; responses.at(-1)?.headers.connection === "close" && !conn.closed && Date.now() < end; ) await conn.next(100);
    return { responses, closed: conn.closed, answeredMs };
  } finally {
    conn.close();
  }
}

const post = (path: string, contentType: string, body: Buffer, extra = "") =>
  Buffer.concat([Buffer.from(`POST ${path} HTTP/1.1\r\nHost: shop\r\nContent-Type: ${contentType}\r\n${extra}Content-Length: ${body.length}\r\n\r\n`, "latin1"), body]);
/** One gRPC-Web / Connect streaming frame: flags, 32-bit length, payload. */
function envelope(flags: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(payload.length, 1);
  return Buffer.concat([head, payload]);
}
const json = (res: RawResponse) => JSON.parse(res.body.toString("utf8"));
/** grpc-status and grpc-message of a gRPC-Web answer: in its headers, or in the trailer frame of its body. */
function grpcStatus(res: RawResponse): { status: string | undefined; message: string } {
  const body = res.body.toString("latin1");
  return {
    status: res.headers["grpc-status"] ?? /grpc-status:\s*(\d+)/.exec(body)?.[1],
    message: decodeURIComponent(res.headers["grpc-message"] ?? /grpc-message:\s*([^\r\n]*)/.exec(body)?.[1] ?? ""),
  };
}

describe("edge: an RPC body that does not decode is the caller's error (INVALID_ARGUMENT), not INTERNAL", () => {
  // Fuzz case 89: Connect unary, binary, garbage.
  const garbage = Buffer.from("\x18\x03I\xd6 \x199\x17\xdf/B}Y\xec\xea\xd9(\xac", "latin1");

  it("Connect (application/proto): 400 naming the message it could not decode", async () => {
    const { responses } = await exchange([post("/shop.identity.v1.IdentityService/Register", "application/proto", garbage)]);
    expect(responses[0]!.status).toBe(400);
    // Connect's own error body: details only when there are some.
    expect(json(responses[0]!)).toEqual({ code: "invalid_argument", message: expect.stringMatching(/could not be decoded as shop\.identity\.v1\.RegisterRequest/) });
  });

  it("Connect GET (the message in the query): 400 naming the message", async () => {
    const message = encodeURIComponent(garbage.toString("base64"));
    const { responses } = await exchange([`GET /shop.catalog.v1.CatalogService/GetProduct?connect=v1&encoding=proto&base64=1&message=${message} HTTP/1.1\r\nHost: shop\r\n\r\n`]);
    expect(responses[0]!.status).toBe(400);
    expect(json(responses[0]!)).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(/could not be decoded as shop\.catalog\.v1\.GetProductRequest/) });
  });

  it("Connect GET: a message that is no base64 is 400", async () => {
    const { responses } = await exchange(["GET /shop.catalog.v1.CatalogService/GetProduct?connect=v1&encoding=proto&base64=1&message=a HTTP/1.1\r\nHost: shop\r\n\r\n"]);
    expect(responses[0]!.status).toBe(400);
    expect(json(responses[0]!)).toMatchObject({ code: "invalid_argument", message: expect.stringMatching(/base64/) });
  });

  it.each([
    ["application/grpc-web+proto", "/shop.catalog.v1.CatalogService/ListProducts", "\xd9\x15\xe6\xccM\xae\xb4=Q\xda\xfa\xa1\x03\xff\xdd"], // as fuzz case 525
    ["application/grpc-web", "/shop.catalog.v1.CatalogService/GetProduct", "$\x1a\xb3\"=\xdfS!\xe8"], // as case 2249
  ])("gRPC-Web (%s): grpc-status 3 naming the message", async (contentType, path, body) => {
    const { responses } = await exchange([post(path, contentType, envelope(0, Buffer.from(body, "latin1")), "X-Grpc-Web: 1\r\n")]);
    expect(responses[0]!.status).toBe(200);
    const { status, message } = grpcStatus(responses[0]!);
    expect(status).toBe("3");
    expect(message).toMatch(/could not be decoded as shop\.catalog\.v1\.(ListProducts|GetProduct)Request/);
  });

  // Seed 1722964704, case 7420: JSON's parser quoted the start of a body and cut an emoji in two; the
  // lone half made connect's percent-encoding of grpc-message throw, and the edge answered 500.
  it.each([
    ["application/grpc-web+json", "x" + "😀".repeat(30), /not valid JSON/],
    ["application/grpc+json", "x" + "😀".repeat(30), /not valid JSON/],
  ])("%s: a message quoting half a character is still grpc-status 3, not 500 (%s)", async (contentType, text, message) => {
    const { responses } = await exchange([post("/shop.catalog.v1.CatalogService/GetProduct", contentType, envelope(0, Buffer.from(text, "utf8")), "X-Grpc-Web: 1\r\n")]);
    expect(responses[0]!.status).toBe(200);
    const answer = grpcStatus(responses[0]!);
    expect(answer.status).toBe("3");
    expect(answer.message).toMatch(message);
  });

  it("gRPC-Web: a frame flagged compressed with no grpc-encoding is grpc-status 3 (fuzz case 18)", async () => {
    const frame = envelope(1, Buffer.from("\xd9\xebo\x07s\xa2", "latin1"));
    const { responses } = await exchange([post("/shop.catalog.v1.CatalogService/GetProduct", "application/grpc-web", frame, "X-Grpc-Web: 1\r\n")]);
    const { status, message } = grpcStatus(responses[0]!);
    expect(status).toBe("3");
    expect(message).toMatch(/compressed/);
  });
});

describe("edge: refusals connect-node answers with no body get the JSON error body", () => {
  it("415 for a content type no protocol takes (fuzz case 28: JSON that is not UTF-8)", async () => {
    const { responses } = await exchange([post("/shop.catalog.v1.CatalogService/BatchGetProducts", "application/json; charset=latin1", Buffer.from("{}"))]);
    expect(responses[0]!.status).toBe(415);
    expect(json(responses[0]!)).toEqual({ code: "invalid_argument", message: expect.stringMatching(/application\/json; charset=latin1/), details: [] });
  });

  it("405 with Allow for GET on an RPC that has side effects (fuzz case 375)", async () => {
    const { responses } = await exchange(["GET /shop.identity.v1.IdentityService/Register HTTP/1.1\r\nHost: shop\r\n\r\n"]);
    expect(responses[0]!.status).toBe(405);
    expect(responses[0]!.headers.allow).toBe("POST");
    expect(json(responses[0]!)).toEqual({ code: "unimplemented", message: expect.stringMatching(/GET is not allowed/), details: [] });
  });

  it("415 for GET with a gRPC-Web content type on an RPC Connect serves by GET", async () => {
    const { responses } = await exchange(["GET /shop.catalog.v1.CatalogService/GetProduct HTTP/1.1\r\nHost: shop\r\nContent-Type: application/grpc-web\r\n\r\n"]);
    expect(responses[0]!.status).toBe(415);
    expect(json(responses[0]!).message).toMatch(/application\/grpc-web/);
  });
});

describe("edge: the CONNECT method (fuzz case 137)", () => {
  it("is answered 405 with the JSON error body and the connection is closed", async () => {
    const { responses, closed } = await exchange(["CONNECT /v1/products HTTP/1.1\r\nHost: shop\r\n\r\n"]);
    expect(responses[0]!.status).toBe(405);
    expect(responses[0]!.headers.connection).toBe("close");
    expect(json(responses[0]!)).toEqual({ code: "unimplemented", message: expect.stringMatching(/CONNECT/), details: [] });
    expect(closed).toBe(true);
  });
});

describe("edge: a body that never completes (fuzz case 125)", () => {
  it.each([
    ["REST", "/v1/auth/login", "application/json"],
    ["Connect", "/shop.identity.v1.IdentityService/Login", "application/json"],
  ])("%s: a chunk announced as 2^64-1 bytes, then silence, is answered 408 and closed", async (_, path, type) => {
    const started = Date.now();
    const { responses, closed } = await exchange([`POST ${path} HTTP/1.1\r\nHost: shop\r\nContent-Type: ${type}\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n{}`]);
    expect(responses[0]!.status).toBe(408);
    expect(json(responses[0]!)).toEqual({ code: "deadline_exceeded", message: expect.stringMatching(/body/), details: [] });
    expect(responses[0]!.headers.connection).toBe("close");
    expect(closed).toBe(true);
    expect(Date.now() - started).toBeGreaterThanOrEqual(BODY_IDLE_TIMEOUT_MS - 100); // a body still arriving gets its time
  });

  it("Connect: a chunked body over the limit is answered 413 and closed as soon as it passes the limit", async () => {
    const chunk = `400\r\n${"x".repeat(0x400)}\r\n`; // 1 KiB chunks, the limit is 1 KiB; the body never ends
    const { responses, closed, answeredMs } = await exchange([`POST /shop.identity.v1.IdentityService/Login HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.repeat(2)}`]);
    expect(responses[0]!.status).toBe(413);
    expect(answeredMs[0]).toBeLessThan(BODY_IDLE_TIMEOUT_MS); // not when the body stops arriving
    expect(json(responses[0]!).code).toBe("resource_exhausted");
    expect(closed).toBe(true);
  });
});

/**
 * As a client that sends its whole request before it reads (as many simple HTTP clients do):
 * everything the server sent by the time the client's write completed or failed, and how.
 */
function sendAllThenRead(request: Buffer): Promise<{ text: string; writeError?: string }> {
  return new Promise((resolve) => {
    const socket = connect(gateway.port, "127.0.0.1");
    socket.pause();
    socket.on("error", () => {}); // reported through the write's callback
    const chunks: Buffer[] = [];
    socket.write(request, (err) => {
      if (err) return resolve({ text: Buffer.concat(chunks).toString("latin1"), writeError: (err as NodeJS.ErrnoException).code });
      socket.on("data", (d: Buffer) => chunks.push(d)).on("close", () => resolve({ text: Buffer.concat(chunks).toString("latin1") }));
      socket.resume();
    });
  });
}

describe("edge: a 413 reaches a client still sending its body (fuzz case 1411)", () => {
  it.each([
    ["Content-Length", (body: string) => `Content-Length: ${body.length}\r\n\r\n${body}`],
    ["chunked", (body: string) => `Transfer-Encoding: chunked\r\n\r\n${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`],
  ])("%s: 8 MiB against a 1 KiB limit is answered 413; the connection is not reset under the client's feet", async (_, framing) => {
    const body = "a".repeat(8 * 1024 * 1024);
    const { text, writeError } = await sendAllThenRead(Buffer.from(`POST /v1/auth/login HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\n${framing(body)}`, "latin1"));
    expect(writeError).toBeUndefined();
    expect(text).toMatch(/^HTTP\/1\.1 413 [^]*\r\nconnection: close\r\n[^]*"code":"resource_exhausted"/i);
  });
});

describe("edge: keep-alive connections stay in step", () => {
  it("an interim 100 Continue is not taken for the answer (fuzz case 7453 read the answer before its own)", async () => {
    const { responses } = await exchange([
      post("/v1/nowhere", "application/json", Buffer.from("{}"), "Expect: 100-continue\r\n"),
      "HEAD /v1/orders HTTP/1.1\r\nHost: shop\r\n\r\n", // an answer with Content-Length and no body
      "PATCH /v1/users/%ZZ HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n",
    ]);
    expect(responses.map((r) => r.status)).toEqual([404, 405, 400, 200]);
  });

  it("a body the edge answered without reading (405 on a REST path) is drained, and the next request is answered", async () => {
    const { responses } = await exchange([
      "PUT /v1/products HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n28\r\n{\"displayName\":\"order_status_confirmed\"}\r\n0\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n",
    ]);
    expect(responses.map((r) => r.status)).toEqual([405, 200]);
    expect(json(responses[1]!)).toEqual({ status: "ok" });
  });

  it("a gRPC answer's trailers (after the last chunk) are read with it (seed 777, case 7524 read a HEAD's 405 as its own answer)", async () => {
    // gRPC over HTTP/1.1 ends its chunked body with a trailer section (grpc-status, grpc-message).
    // The fuzz's reader took only "0\r\n\r\n" as the end: the trailers' bytes stayed on the
    // connection, the next request (HEAD) took them for its answer, and the one after got the HEAD's 405.
    const { responses } = await exchange([
      post("/shop.catalog.v1.CatalogService/GetProduct", "application/grpc", envelope(0, Buffer.alloc(0)), "grpc-timeout: abc\r\n"),
      "HEAD /v1/orders HTTP/1.1\r\nHost: shop\r\n\r\n",
      "GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n",
    ]);
    expect(responses.map((r) => r.status)).toEqual([200, 405, 200]);
    expect(responses[0]!.headers["transfer-encoding"]).toMatch(/chunked/);
    expect(grpcStatus(responses[0]!)).toEqual({ status: "3", message: expect.stringMatching(/grpc timeout/) });
    expect(json(responses[2]!)).toEqual({ status: "ok" });
  });
});
