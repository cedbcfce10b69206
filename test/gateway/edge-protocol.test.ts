// The edge at the HTTP level, over raw sockets where clients would never send such bytes: request
// targets that are no URL, parser errors, a 413 on a keep-alive connection, and metrics kept off
// the public port. The gateway runs alone (no request here reaches a service).
import { connect } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { RunningGateway } from "../../gateway/gateway.js";
import { startLoneGateway, type LoneGateway } from "../support/lone-gateway.js";

let lone: LoneGateway;
let gateway: RunningGateway;

beforeAll(async () => {
  lone = await startLoneGateway({ MAX_BODY_BYTES: "1024" });
  gateway = lone.gateway;
}, 60_000);
afterAll(() => lone?.stop());

interface Exchange {
  /** Every response the server wrote, in order. */
  responses: { status: number; headers: Record<string, string>; body: string }[];
  /** How the connection ended: closed cleanly by the server, or with a socket error. */
  ending: "end" | `error ${string}`;
}

/** Writes raw bytes on one connection and reads until the server closes it (bounded generously). */
function exchange(bytes: string | Buffer[], timeoutMs = 20_000): Promise<Exchange> {
  return new Promise((resolve, reject) => {
    const socket = connect(gateway.port, "127.0.0.1");
    const chunks: Buffer[] = [];
    const timer = setTimeout(() => (socket.destroy(), reject(new Error(`the server kept the connection open for ${timeoutMs} ms: ${Buffer.concat(chunks)}`))), timeoutMs);
    const done = (ending: Exchange["ending"]) => {
      clearTimeout(timer);
      resolve({ responses: parseResponses(Buffer.concat(chunks).toString("latin1")), ending });
    };
    socket.on("data", (c) => chunks.push(c));
    socket.on("end", () => done("end"));
    socket.on("error", (err) => done(`error ${(err as NodeJS.ErrnoException).code}`));
    socket.on("connect", () => {
      for (const part of typeof bytes === "string" ? [Buffer.from(bytes, "latin1")] : bytes) socket.write(part);
    });
  });
}

function parseResponses(text: string): Exchange["responses"] {
  const responses: Exchange["responses"] = [];
  let rest = text;
  while (rest.startsWith("HTTP/1.1 ")) {
    const headEnd = rest.indexOf("\r\n\r\n");
    const [statusLine, ...lines] = rest.slice(0, headEnd).split("\r\n");
    const headers = Object.fromEntries(lines.map((l) => [l.slice(0, l.indexOf(":")).toLowerCase(), l.slice(l.indexOf(":") + 1).trim()]));
    const length = Number(headers["content-length"] ?? 0);
    responses.push({ status: Number(statusLine!.split(" ")[1]), headers, body: rest.slice(headEnd + 4, headEnd + 4 + length) });
    rest = rest.slice(headEnd + 4 + length);
  }
  return responses;
}

/** A response that says, in the edge's usual JSON, what was wrong, and closes the connection. */
function expectJsonRefusal(ex: Exchange, status: number, message: RegExp) {
  expect(ex.responses.map((r) => r.status)).toEqual([status]);
  const [res] = ex.responses;
  expect(res!.headers["content-type"]).toMatch(/^application\/json/);
  const body = JSON.parse(res!.body);
  expect(body).toEqual({ code: expect.any(String), message: expect.stringMatching(message), details: [] });
  expect(res!.headers.connection).toBe("close");
  expect(ex.ending).toBe("end");
}

describe("edge: request targets that are no URL", () => {
  it.each(["//[/v1/products", "http://[::1", "http://:99999/"])("GET %s is 400 with a JSON error body", async (target) => {
    const ex = await exchange(`GET ${target} HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n`);
    expect(ex.responses[0]!.status).toBe(400);
    expect(JSON.parse(ex.responses[0]!.body)).toEqual({ code: "invalid_argument", message: expect.stringMatching(/request target/), details: [] });
  });
});

describe("edge: a body over the size limit", () => {
  it("is answered 413 and the keep-alive connection is closed, not left hanging for the next request", async () => {
    const chunk = `400\r\n${"x".repeat(0x400)}\r\n`; // 1 KiB chunks: over MAX_BODY_BYTES (1 KiB) at the second
    const first = `POST /v1/auth/login HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.repeat(4)}0\r\n\r\n`;
    const second = `GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n`;
    const ex = await exchange([Buffer.from(first), Buffer.from(second)]);
    expect(ex.responses[0]!.status).toBe(413);
    expect(JSON.parse(ex.responses[0]!.body).code).toBe("resource_exhausted");
    expect(ex.responses[0]!.headers.connection).toBe("close");
    expect(ex.responses).toHaveLength(1); // the rest of that body was never read as a request
    expect(ex.ending).toBe("end");
  });

  it("over Connect is refused and the connection stays usable or is closed, never left hanging", async () => {
    const chunk = `400\r\n${"x".repeat(0x400)}\r\n`;
    const first = `POST /shop.identity.v1.IdentityService/Login HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.repeat(4)}0\r\n\r\n`;
    const ex = await exchange([Buffer.from(first), Buffer.from("GET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n")]);
    expect(ex.responses[0]!.status).toBe(413); // the edge reads every body itself: the same refusal as REST
    expect(JSON.parse(ex.responses[0]!.body).code).toBe("resource_exhausted");
    if (ex.responses[0]!.headers.connection !== "close") expect(ex.responses[1]?.status).toBe(200);
    expect(ex.ending).toBe("end");
  });

  it("announced by Content-Length is answered 413 the same way", async () => {
    const ex = await exchange(`POST /v1/auth/login HTTP/1.1\r\nHost: shop\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n${"x".repeat(5000)}GET /healthz HTTP/1.1\r\nHost: shop\r\n\r\n`);
    expect(ex.responses.map((r) => [r.status, r.headers.connection])).toEqual([[413, "close"]]);
    expect(ex.ending).toBe("end");
  });

  it("still leaves a keep-alive connection usable after an ordinary error", async () => {
    const ex = await exchange(`GET /v1/nowhere HTTP/1.1\r\nHost: shop\r\n\r\nGET /healthz HTTP/1.1\r\nHost: shop\r\nConnection: close\r\n\r\n`);
    expect(ex.responses.map((r) => r.status)).toEqual([404, 200]);
  });
});

describe("edge: requests Node's HTTP parser refuses", () => {
  const cases: [string, string, number, RegExp][] = [
    ["an unknown method", "FROB /v1/products HTTP/1.1\r\nHost: shop\r\n\r\n", 400, /method/],
    ["a bad HTTP version", "GET /v1/products HTTP/3.7\r\nHost: shop\r\n\r\n", 400, /version/],
    ["a NUL byte in a header", "GET /v1/products HTTP/1.1\r\nHost: shop\r\nX-Note: a\0b\r\n\r\n", 400, /header/],
    ["two Content-Length headers", "POST /v1/auth/login HTTP/1.1\r\nHost: shop\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}", 400, /Content-Length/],
    ["headers over the size limit", `GET /v1/products HTTP/1.1\r\nHost: shop\r\nX-Padding: ${"a".repeat(20_000)}\r\n\r\n`, 431, /headers/],
  ];
  it.each(cases)("%s gets the usual JSON error body and a closed connection", async (_name, bytes, status, message) => {
    expectJsonRefusal(await exchange(bytes), status, message);
  });
});

describe("edge: metrics", () => {
  it("are served on their own port, not on the public one", async () => {
    await fetch(`http://127.0.0.1:${gateway.port}/healthz`);
    const metrics = await fetch(`http://127.0.0.1:${gateway.metricsPort}/metrics`);
    expect(metrics.status).toBe(200);
    expect(await metrics.text()).toMatch(/http_requests_total\{[^}]*route="\/healthz"/);
    const outside = await fetch(`http://127.0.0.1:${gateway.port}/metrics`);
    expect(outside.status).toBe(404);
    expect((await outside.json()).code).toBe("not_found");
  });
});
