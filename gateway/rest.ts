// REST/JSON requests: match a route derived from the contracts, build the request message from
// path, query and body, call the upstream, answer JSON (or Server-Sent Events for a stream).
import type { IncomingMessage, ServerResponse } from "node:http";
import { toJson, type JsonValue } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { buildRequest, matchRoute, type Route } from "./http-rules.js";
import { authorize } from "./access.js";
import { toHttpError } from "./errors.js";
import { proxyStream, proxyUnary, type EdgeCall } from "./proxy.js";
import { readBody, type BodyLimits } from "./request-body.js";
import type { PublicReads } from "./public-reads.js";
import type { Upstreams } from "./upstreams.js";

/** Reads the body (see request-body.ts), and parses it as JSON when there is one. */
async function readJson(req: IncomingMessage, limits: BodyLimits): Promise<JsonValue | undefined> {
  const body = await readBody(req, limits);
  if (body.length === 0) return undefined;
  const type = req.headers["content-type"] ?? "";
  if (!/^application\/json\b/i.test(type)) throw new ConnectError(`send the body as application/json (got ${type || "no content-type"})`, Code.InvalidArgument);
  try {
    return JSON.parse(body.toString("utf8")) as JsonValue;
  } catch (err) {
    throw new ConnectError(`the body is not valid JSON: ${(err as Error).message}`, Code.InvalidArgument);
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, extraHeaders: Record<string, string> = {}): void {
  sendJsonBytes(res, status, JSON.stringify(body), extraHeaders);
}

/** Answers JSON already serialized (e.g. from the cache of public reads). */
export function sendJsonBytes(res: ServerResponse, status: number, body: string | Buffer, extraHeaders: Record<string, string> = {}): void {
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(body), ...extraHeaders });
  res.end(body);
}

export function sendError(res: ServerResponse, err: unknown, tokenGiven = false): void {
  if (res.headersSent) return void res.destroy();
  const { status, body } = toHttpError(err);
  // RFC 6750: name the error only when a token was sent and refused.
  const challenge = `Bearer realm="shopmesh"${tokenGiven ? `, error="invalid_token"` : ""}`;
  sendJson(res, status, body, status === 401 ? { "www-authenticate": challenge } : {});
}

export interface RestOptions {
  routes: readonly Route[];
  upstreams: Upstreams;
  body: BodyLimits;
  publicReads?: PublicReads;
}

/** Handles a REST request; false when no route's path matches (the caller answers 404). */
export async function handleRest(opts: RestOptions, req: IncomingMessage, res: ServerResponse, url: URL, call: EdgeCall): Promise<boolean> {
  const match = matchRoute(opts.routes, req.method ?? "GET", url.pathname);
  if (match === "not-found") return false;
  if ("allowed" in match) {
    sendJson(res, 405, { code: "unimplemented", message: `${req.method} is not allowed on ${url.pathname}`, details: [] }, { allow: match.allowed.join(", ") });
    return true;
  }
  const { method } = match.route;
  authorize(method, call.user); // before reading a body the caller may not send here
  const body = await readJson(req, opts.body);
  const request = () => buildRequest(match, body, url.searchParams);
  if (method.methodKind === "server_streaming") {
    const stream = proxyStream(opts.upstreams, method, request(), call)[Symbol.asyncIterator]();
    const first = await stream.next(); // errors before the first message still get a JSON error
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache", connection: "keep-alive" });
    const write = (m: typeof first.value) => res.write(`data: ${JSON.stringify(toJson(method.output, m))}\n\n`);
    if (!first.done) write(first.value);
    try {
      for (let next = await stream.next(); !next.done; next = await stream.next()) write(next.value);
    } catch (err) {
      res.write(`event: error\ndata: ${JSON.stringify(toHttpError(err).body)}\n\n`);
    }
    res.end();
    return true;
  }
  const read = () => proxyUnary(opts.upstreams, method, request(), call);
  if (opts.publicReads?.covers(method) && req.method === "GET" && body === undefined && !req.headers.authorization) {
    // The key is the whole target: a stored answer's request was built from it once already.
    sendJsonBytes(res, 200, await opts.publicReads.answer(method, url.pathname + url.search, read));
    return true;
  }
  sendJson(res, 200, toJson(method.output, await read()));
  return true;
}
