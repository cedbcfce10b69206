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

/** How a POST body is framed, by content type, as the protocol that takes it reads it. */
interface Framing {
  binary: boolean;
  /** Length-prefixed frames (streaming Connect, gRPC-Web, gRPC) rather than one bare message. */
  enveloped: boolean;
  /** The header that names the frames' (or the body's) compression. */
  encodingHeader: string;
  /** Frames with this flag end the stream and carry no request message. */
  endFlag?: number;
}

function framingOf(contentType: string): Framing | undefined {
  const connect = connectProtocol.parseContentType(contentType);
  if (connect) {
    return connect.stream
      ? { binary: connect.binary, enveloped: true, encodingHeader: connectProtocol.headerStreamEncoding, endFlag: connectProtocol.endStreamFlag }
      : { binary: connect.binary, enveloped: false, encodingHeader: connectProtocol.headerUnaryEncoding };
  }
  const grpcWeb = grpcWebProtocol.parseContentType(contentType);
  if (grpcWeb && !grpcWeb.text) return { binary: grpcWeb.binary, enveloped: true, encodingHeader: grpcWebProtocol.headerEncoding, endFlag: grpcWebProtocol.trailerFlag };
  const grpc = grpcProtocol.parseContentType(contentType);
  if (grpc) return { binary: grpc.binary, enveloped: true, encodingHeader: grpcProtocol.headerEncoding };
  return undefined; // no protocol takes it: connect answers 415
}

/**
 * Why connect could not decode this body as the RPC's request, or undefined when it can: the
 * body through connect's own pipeline (frames, decompression, parsing). What fails there is the
 * caller's input, so connect's INTERNAL becomes INVALID_ARGUMENT naming the message type.
 */
async function undecodable(method: DescMethod, serialization: Serialization, req: IncomingMessage, body: Uint8Array, maxBytes: number): Promise<ConnectError | undefined> {
  const framing = req.method === "POST" ? framingOf(req.headers["content-type"] ?? "") : undefined;
  if (!framing) return undefined; // connect refuses it before reading a body
  const compression = compressionNegotiate(acceptCompression, req.headers[framing.encodingHeader.toLowerCase()]?.toString() ?? null, null, "");
  if (compression.error) return undefined; // an encoding connect does not take: it says so itself
  const parser = serialization.getI(framing.binary);
  try {
    if (!framing.enveloped) parser.parse(compression.request ? await compression.request.decompress(body, maxBytes) : body);
    else {
      const parse = framing.endFlag === undefined ? transformParseEnvelope(parser) : transformParseEnvelope(parser, framing.endFlag);
      for await (const _ of pipe(createAsyncIterable([body]), transformSplitEnvelope(maxBytes), transformDecompressEnvelope(compression.request, maxBytes), parse));
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
    const refusal = await undecodable(handler.method, serializations.get(handler.method)!, req, body, opts.body.maxBytes);
    const request = universalRequestFromNodeRequest(req, res, undefined, createContextValues().set(edgeCallKey, call));
    const answer = await handler({ ...request, body: refusal ? failing(refusal) : createAsyncIterable([body]) });
    if (answer.body === undefined && answer.status >= 400) return sendJson(res, ...bodilessRefusal(handler, req, answer.status));
    await new Promise<void>((resolve) => {
      res.once("close", resolve);
      universalResponseToNodeResponse(answer, res).catch((err) => {
        if (ConnectError.from(err).code !== Code.Aborted) opts.logger.warn({ err, request_id: call.requestId }, "writing an RPC answer failed");
      });
    });
  };
}
