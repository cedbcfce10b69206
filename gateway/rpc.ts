// The RPC protocols at the edge (Connect, gRPC-Web, gRPC over HTTP/1.1): connect-node's router,
// one handler per RPC the contracts expose, each forwarding to its service. connect-node's own
// adapter is not used because connect 2.1.2 answers bad requests in ways the edge must not:
//  - a body that does not decode is INTERNAL (its binary serialization throws "parse binary: …"
//    with Code.Internal), and so is a frame flagged compressed when the request names no encoding.
//    Connect decodes before any interceptor runs and offers no hook there, so the edge runs
//    connect's own request pipeline on the body first and hands connect a body that fails with
//    INVALID_ARGUMENT naming the message type; connect then answers it in the caller's protocol.
//  - a method or content type no protocol takes is 405/415 with an empty body: the edge gives
//    those answers its JSON error body.
//  - it reads the body as it likes; the edge reads it (request-body.ts: size and idle limits,
//    the same for every protocol) and hands connect the bytes.
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from "node:http";
import type { DescMessage, DescMethod, Message } from "@bufbuild/protobuf";
import { base64Decode } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createConnectRouter, createContextKey, createContextValues, type HandlerContext, type MethodImpl } from "@connectrpc/connect";
import { compressionBrotli, compressionGzip, universalRequestFromNodeRequest, universalResponseToNodeResponse } from "@connectrpc/connect-node";
import { compressionNegotiate, createAsyncIterable, createMethodSerializationLookup, pipe, transformDecompressEnvelope, transformParseEnvelope, transformSplitEnvelope, type MethodSerializationLookup, type UniversalHandler } from "@connectrpc/connect/protocol";
import * as connectProtocol from "@connectrpc/connect/protocol-connect";
import * as grpcProtocol from "@connectrpc/connect/protocol-grpc";
import * as grpcWebProtocol from "@connectrpc/connect/protocol-grpc-web";
import type { Logger } from "../mesh/telemetry.js";
import { authorize, edgeMethods } from "./access.js";
import { decodeJson } from "./json-input.js";
import { proxyStream, proxyUnary, type EdgeCall } from "./proxy.js";
import { readBody, type BodyLimits } from "./request-body.js";
import { sendJson } from "./rest.js";
import { publicServices, type Upstreams } from "./upstreams.js";

const acceptCompression = [compressionGzip, compressionBrotli];
type Serialization = MethodSerializationLookup<DescMessage, DescMessage>;

const edgeCallKey = createContextKey<EdgeCall | undefined>(undefined, { description: "edge call" });
const edgeCallOf = (ctx: HandlerContext): EdgeCall => ({ ...ctx.values.get(edgeCallKey)!, signal: ctx.signal });

/**
 * JSON options for one RPC whose text decoder also checks the request's JSON shape, so a misfit
 * is refused naming the field (json-input.ts) rather than the protobuf type. Connect's JSON
 * serialization (connect 2.1.2) passes every request body, unary or streamed, Connect or
 * gRPC-Web, through `textDecoder`.
 */
function fieldNamingJson(method: DescMethod) {
  const utf8 = new TextDecoder();
  const textDecoder = {
    decode(bytes: Uint8Array): string {
      const text = utf8.decode(bytes);
      let json;
      try {
        json = JSON.parse(text);
      } catch (err) {
        throw new ConnectError(`the body is not valid JSON: ${(err as Error).message}`, Code.InvalidArgument);
      }
      decodeJson(method.input, json, { ignoreUnknownFields: true }); // as Connect reads JSON
      return text;
    },
  };
  return { ignoreUnknownFields: true, textDecoder } as object;
}

/** The request message as the protocol that takes the request carries it. */
interface Input {
  binary: boolean;
  /** Length-prefixed frames (streaming Connect, gRPC-Web, gRPC) rather than one bare message. */
  enveloped: boolean;
  /** The compression the request names for its frames (or its one message). */
  encoding: string | null;
  /** Frames with this flag end the stream and carry no request message. */
  endFlag?: number;
  bytes: Uint8Array;
}

function base64Query(message: string): Uint8Array {
  try {
    return base64Decode(message);
  } catch {
    throw new ConnectError("the message query parameter is not valid base64", Code.InvalidArgument); // connect: INTERNAL
  }
}

/** The input of a request, or undefined for one connect refuses before reading any (405, 415). */
function inputOf(req: IncomingMessage, body: Uint8Array): Input | undefined {
  const header = (name: string) => req.headers[name.toLowerCase()]?.toString() ?? null;
  if (req.method === "GET") {
    // Connect's GET, for RPCs without side effects: the one message is in the query.
    const query = new URL(req.url ?? "/", "http://edge").searchParams;
    const encoding = query.get("encoding");
    if (encoding !== "proto" && encoding !== "json") return undefined;
    const message = query.get("message") ?? "";
    return { binary: encoding === "proto", enveloped: false, encoding: query.get("compression"), bytes: query.get("base64") === "1" ? base64Query(message) : new TextEncoder().encode(message) };
  }
  if (req.method !== "POST") return undefined;
  const contentType = header("content-type") ?? "";
  const connect = connectProtocol.parseContentType(contentType);
  if (connect?.stream) return { binary: connect.binary, enveloped: true, encoding: header(connectProtocol.headerStreamEncoding), endFlag: connectProtocol.endStreamFlag, bytes: body };
  if (connect) return { binary: connect.binary, enveloped: false, encoding: header(connectProtocol.headerUnaryEncoding), bytes: body };
  const grpcWeb = grpcWebProtocol.parseContentType(contentType);
  if (grpcWeb && !grpcWeb.text) return { binary: grpcWeb.binary, enveloped: true, encoding: header(grpcWebProtocol.headerEncoding), endFlag: grpcWebProtocol.trailerFlag, bytes: body };
  const grpc = grpcProtocol.parseContentType(contentType);
  if (grpc) return { binary: grpc.binary, enveloped: true, encoding: header(grpcProtocol.headerEncoding), bytes: body };
  return undefined;
}

/**
 * Why connect could not decode this request's input as the RPC's request message, or undefined
 * when it can: the input through connect's own pipeline (frames, decompression, parsing). What
 * fails there is the caller's input, so connect's INTERNAL becomes INVALID_ARGUMENT naming the
 * message type.
 */
async function undecodable(method: DescMethod, serialization: Serialization, input: Input, maxBytes: number): Promise<ConnectError | undefined> {
  const compression = compressionNegotiate(acceptCompression, input.encoding, null, "");
  if (compression.error) return undefined; // an encoding connect does not take: it says so itself
  const parser = serialization.getI(input.binary);
  try {
    if (!input.enveloped) parser.parse(compression.request ? await compression.request.decompress(input.bytes, maxBytes) : input.bytes);
    else {
      const parse = input.endFlag === undefined ? transformParseEnvelope(parser) : transformParseEnvelope(parser, input.endFlag);
      for await (const _ of pipe(createAsyncIterable([input.bytes]), transformSplitEnvelope(maxBytes), transformDecompressEnvelope(compression.request, maxBytes), parse));
    }
    return undefined;
  } catch (err) {
    const error = ConnectError.from(err);
    if (error.code !== Code.Internal && error.code !== Code.Unknown) return error; // already names what is wrong with the input
    return new ConnectError(`the request body could not be decoded as ${method.input.typeName}: ${error.rawMessage}`, Code.InvalidArgument);
  }
}

async function* failing(err: ConnectError): AsyncIterable<Uint8Array> {
  throw err;
}

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/**
 * The refusal with a message connect can send. gRPC and gRPC-Web carry it percent-encoded in
 * grpc-message, and encodeURIComponent throws on half a UTF-16 character: JSON's parser quotes the
 * body and may cut its excerpt inside a character, and connect's throw became a 500 (fuzz seed
 * 1722964704, case 7420). Only the decode refusal quotes the caller's bytes: an upstream's message
 * arrives percent-decoded, whole.
 */
function sendable(err: ConnectError): ConnectError {
  const message = err.rawMessage.replace(LONE_SURROGATE, "\uFFFD");
  if (message === err.rawMessage) return err;
  const fixed = new ConnectError(message, err.code, err.metadata, undefined, err.cause);
  fixed.details.push(...err.details);
  return fixed;
}

/** The JSON answer for a request connect refused with an empty body (405, 415). */
function bodilessRefusal(handler: UniversalHandler, req: IncomingMessage, status: number): [number, object, Record<string, string>] {
  const rpc = `${handler.service.typeName}/${handler.method.name}`;
  const error = (code: string, message: string) => ({ code, message, details: [] });
  if (status === 405) {
    const allowed = handler.allowedMethods.join(", ");
    return [405, error("unimplemented", `${req.method} is not allowed on ${rpc}: use ${allowed}`), { allow: allowed }];
  }
  if (status === 415) {
    const types = handler.method.methodKind === "unary" ? "application/json or application/proto (Connect)" : "application/connect+json or application/connect+proto (Connect)";
    const given = req.headers["content-type"] ? `content type "${req.headers["content-type"]}"` : "a request without a content type";
    return [415, error("invalid_argument", `${rpc} does not take ${given}: send ${types}, application/grpc-web+proto (gRPC-Web) or application/grpc+proto (gRPC)`), {}];
  }
  return [status, error(status >= 500 ? "unimplemented" : "invalid_argument", `${rpc} cannot be served for this request (${STATUS_CODES[status]})`), {}];
}

export interface RpcOptions {
  upstreams: Upstreams;
  body: BodyLimits;
  logger: Logger;
}

/** The Connect, gRPC-Web and gRPC handlers of the RPCs the edge serves. */
export function createRpcHandler(opts: RpcOptions) {
  const router = createConnectRouter({ readMaxBytes: opts.body.maxBytes, acceptCompression });
  const serializations = new Map<DescMethod, Serialization>();
  for (const method of edgeMethods(publicServices.map(([s]) => s))) {
    const impl =
      method.methodKind === "server_streaming"
        ? (req: Message, ctx: HandlerContext) => proxyStream(opts.upstreams, method, req, edgeCallOf(ctx))
        : (req: Message, ctx: HandlerContext) => proxyUnary(opts.upstreams, method, req, edgeCallOf(ctx));
    const jsonOptions = fieldNamingJson(method);
    router.rpc(method, impl as MethodImpl<DescMethod>, { jsonOptions });
    serializations.set(method, createMethodSerializationLookup(method, undefined, jsonOptions, { readMaxBytes: opts.body.maxBytes, writeMaxBytes: opts.body.maxBytes }));
  }
  const handlers = new Map(router.handlers.map((h) => [h.requestPath, h]));

  /** Serves `path`; resolves when the answer is complete (or the connection is gone). */
  return async function serveRpc(req: IncomingMessage, res: ServerResponse, path: string, call: EdgeCall): Promise<void> {
    const handler = handlers.get(path);
    if (!handler) return sendJson(res, 404, { code: "unimplemented", message: `no RPC ${path} is served here`, details: [] });
    authorize(handler.method, call.user); // before reading a body the caller may not send here
    const body = await readBody(req, opts.body);
    const input = inputOf(req, body);
    const refusal = input && (await undecodable(handler.method, serializations.get(handler.method)!, input, opts.body.maxBytes));
    if (refusal && req.method === "GET") throw refusal; // connect reads a GET's query, not a body: the edge answers, as Connect would
    const request = universalRequestFromNodeRequest(req, res, undefined, createContextValues().set(edgeCallKey, call));
    const answer = await handler({ ...request, body: refusal ? failing(sendable(refusal)) : createAsyncIterable([body]) });
    if (answer.body === undefined && answer.status >= 400) return sendJson(res, ...bodilessRefusal(handler, req, answer.status));
    await new Promise<void>((resolve) => {
      res.once("close", resolve);
      universalResponseToNodeResponse(answer, res).catch((err) => {
        if (ConnectError.from(err).code !== Code.Aborted) opts.logger.warn({ err, request_id: call.requestId }, "writing an RPC answer failed");
      });
    });
  };
}
