// Calls an upstream RPC for the edge, carrying the verified end user as metadata. Used by both
// the Connect/gRPC-Web handlers and the REST routes, so both behave the same.
import type { DescMethod, Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { headers, type EndUser } from "../mesh/rpc/call-scope.js";
import { authorize } from "./access.js";
import { serviceName, type Upstreams } from "./upstreams.js";

export interface EdgeCall {
  user?: EndUser;
  requestId: string;
  /** From the Idempotency-Key header: fills a request's idempotency_key field when it has one. */
  idempotencyKey?: string;
  signal?: AbortSignal;
  /** Told the upstream's own words when the caller is given the edge's instead (for the access log). */
  report?(upstreamError: ConnectError): void;
}

function callOptions(method: DescMethod, call: EdgeCall) {
  authorize(method, call.user);
  const h: Record<string, string> = { [headers.requestId]: call.requestId };
  if (call.user) {
    h[headers.userId] = call.user.id;
    h[headers.userRoles] = call.user.roles.join(",");
  }
  return { headers: h, signal: call.signal };
}

/**
 * What a caller is told when an upstream fails at the transport level or breaks. The texts of these
 * codes come from grpc-js, from a service relaying its own upstream's failure, or from a bug: they
 * name internal addresses and library internals. Callers learn which service failed, not where.
 */
const edgeWords: Partial<Record<Code, (service: string, requestId: string) => string>> = {
  [Code.DeadlineExceeded]: (s) => `the ${s} service did not answer in time`,
  [Code.Unavailable]: (s) => `the ${s} service is unavailable; retry shortly`,
  [Code.Internal]: (s, id) => `the ${s} service failed (request id ${id})`,
  [Code.Unknown]: (s, id) => `the ${s} service failed (request id ${id})`,
  [Code.DataLoss]: (s, id) => `the ${s} service failed (request id ${id})`,
};

function edgeFacing(method: DescMethod, call: EdgeCall, err: unknown): unknown {
  if (!(err instanceof ConnectError)) return err;
  const words = edgeWords[err.code];
  if (!words) return err;
  call.report?.(err);
  const facing = new ConnectError(words(serviceName(method.parent), call.requestId), err.code, undefined, undefined, err);
  facing.details.push(...err.details);
  return facing;
}

type Unary = (req: Message, opts: object) => Promise<Message>;
type Streaming = (req: Message, opts: object) => AsyncIterable<Message>;

export async function proxyUnary(upstreams: Upstreams, method: DescMethod, request: Message, call: EdgeCall): Promise<Message> {
  const client = upstreams.get(method.parent) as unknown as Record<string, Unary>;
  const keyed = request as Message & { idempotencyKey?: string };
  if (call.idempotencyKey && typeof keyed.idempotencyKey === "string" && !keyed.idempotencyKey) keyed.idempotencyKey = call.idempotencyKey;
  const options = callOptions(method, call);
  try {
    return await client[method.localName]!(request, options);
  } catch (err) {
    throw edgeFacing(method, call, err);
  }
}

/**
 * The longest a stream stays open at the edge (then DEADLINE_EXCEEDED; the client opens it again).
 * Services end their own streams sooner (WatchOrder: at the order's timeout plus a grace period).
 */
const MAX_STREAM_MS = 5 * 60_000;

export async function* proxyStream(upstreams: Upstreams, method: DescMethod, request: Message, call: EdgeCall): AsyncIterable<Message> {
  const client = upstreams.get(method.parent) as unknown as Record<string, Streaming>;
  const options = { ...callOptions(method, call), timeoutMs: MAX_STREAM_MS };
  try {
    yield* client[method.localName]!(request, options);
  } catch (err) {
    throw edgeFacing(method, call, err);
  }
}
