// Calls an upstream RPC for the edge, carrying the verified end user as metadata. Used by both
// the Connect/gRPC-Web handlers and the REST routes, so both behave the same.
import type { DescMethod, Message } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { headers, type EndUser } from "../mesh/call-scope.js";
import { anonymousMethods, type Upstreams } from "./upstreams.js";

export interface EdgeCall {
  user?: EndUser;
  requestId: string;
  /** From the Idempotency-Key header: fills a request's idempotency_key field when it has one. */
  idempotencyKey?: string;
  signal?: AbortSignal;
}

function callOptions(method: DescMethod, call: EdgeCall) {
  if (!call.user && !anonymousMethods.has(method)) {
    throw new ConnectError(`sign in required: ${method.parent.name}.${method.name} needs a bearer token`, Code.Unauthenticated);
  }
  const h: Record<string, string> = { [headers.requestId]: call.requestId };
  if (call.user) {
    h[headers.userId] = call.user.id;
    h[headers.userRoles] = call.user.roles.join(",");
  }
  return { headers: h, signal: call.signal };
}

type Unary = (req: Message, opts: object) => Promise<Message>;
type Streaming = (req: Message, opts: object) => AsyncIterable<Message>;

export function proxyUnary(upstreams: Upstreams, method: DescMethod, request: Message, call: EdgeCall): Promise<Message> {
  const client = upstreams.get(method.parent) as unknown as Record<string, Unary>;
  const keyed = request as Message & { idempotencyKey?: string };
  if (call.idempotencyKey && typeof keyed.idempotencyKey === "string" && !keyed.idempotencyKey) keyed.idempotencyKey = call.idempotencyKey;
  return client[method.localName]!(request, callOptions(method, call));
}

export function proxyStream(upstreams: Upstreams, method: DescMethod, request: Message, call: EdgeCall): AsyncIterable<Message> {
  const client = upstreams.get(method.parent) as unknown as Record<string, Streaming>;
  return client[method.localName]!(request, callOptions(method, call));
}
