// The server interceptors every service runs, in one place. An interceptor wraps the step after
// it; serve() composes them outermost first: call context, the call's outcome (error mapping,
// metrics, its log line), peer authentication, validation, then the handler. Unary and
// server-streaming calls go through the same chain: for a stream, "next" runs the whole stream,
// so durations and codes cover all of it.
import { Code, ConnectError } from "@connectrpc/connect";
import type { CallContext } from "./call-context.js";
import type { DescMethod, Message } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { createValidator, violationsToProto, type Violation } from "@bufbuild/protovalidate";
import { context, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace } from "@opentelemetry/api";
import type { Registry } from "prom-client";
import { callerKey, headers, withCallScope, type Caller } from "./call-scope.js";
import { nulViolations } from "./nul-bytes.js";
import { withContext } from "../async-context.js";
import { rpcMetrics, spansRecorded, type Logger } from "../telemetry.js";
import { childSpanContext, parseTraceparent, sampled, TRACEPARENT, TRACESTATE } from "./trace-context.js";

export interface CallInfo {
  method: DescMethod;
  ctx: CallContext;
  /** From the caller's x-request-id, or made up for this call. */
  requestId: string;
  /** The ShopMesh service calling, as the transport proves it (certificate or sidecar's XFCC); read on demand. */
  caller(): string | undefined;
  /** Absolute deadline in epoch ms, if the caller set one. */
  deadline?: number;
}
export type Next = (request: Message, call: CallInfo) => Promise<unknown>;
export type ServerInterceptor = (next: Next) => Next;

export const compose = (interceptors: ServerInterceptor[], handler: Next): Next =>
  interceptors.reduceRight((next, interceptor) => interceptor(next), handler);

const fullName = (method: DescMethod) => `${method.parent.typeName}/${method.name}`;

/**
 * The call's async context, entered once for the rest of the chain and the handler: its scope
 * (deadline and request id, for typed clients: call-scope.ts) and a server span continuing the
 * caller's trace from the traceparent header. A span nobody records (no exporter, or the caller's
 * trace is not sampled) is made without the tracing SDK: only its ids (trace-context.ts).
 */
export function callContext(): ServerInterceptor {
  const tracer = trace.getTracer("shopmesh");
  return (next) => (request, call) => {
    const parent = parseTraceparent(call.ctx.header(TRACEPARENT), () => call.ctx.header(TRACESTATE));
    if (!spansRecorded() || (parent !== undefined && !sampled(parent))) {
      const span = trace.wrapSpanContext(childSpanContext(parent));
      return withContext(withCallScope(trace.setSpan(ROOT_CONTEXT, span), { deadline: call.deadline, requestId: call.requestId }), next, request, call);
    }
    const remote = parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT; // as the W3C propagator's extract would
    const span = tracer.startSpan(
      fullName(call.method),
      { kind: SpanKind.SERVER, attributes: { "rpc.system": "grpc", "rpc.service": call.method.parent.typeName, "rpc.method": call.method.name } },
      remote,
    );
    const scoped = withCallScope(trace.setSpan(remote, span), { deadline: call.deadline, requestId: call.requestId });
    return context.with(scoped, async () => {
      try {
        return await next(request, call);
      } catch (err) {
        const code = ConnectError.from(err).code;
        span.setAttribute("rpc.grpc.status_code", code);
        span.setStatus({ code: SpanStatusCode.ERROR, message: Code[code] });
        throw err;
      } finally {
        span.end();
      }
    });
  };
}

/**
 * What every call's outcome gets, in one async frame around the rest of the chain (a frame each
 * cost a promise and its reactions per call):
 * - error mapping: callers see a ConnectError's code, message and details; anything else is a bug
 *   whose text (stack, SQL, file paths) must not leave the process: it is logged and answered
 *   with INTERNAL;
 * - RPC count and latency histogram by method and code;
 * - a log line: method, code, duration, request id, peer (trace ids come from the mixin). Every
 *   failure (warn) and every call that may change something (info) has one; a read that succeeds
 *   (NO_SIDE_EFFECTS in the contract) logs at debug: reads are most of the traffic, a line cost
 *   ~52k instructions (callgrind), and metrics and traces describe them.
 */
export function callOutcome(logger: Logger, registry: Registry): ServerInterceptor {
  const record = rpcMetrics(registry, "server");
  const log = (call: CallInfo, started: number, code: Code | undefined, failure?: ConnectError) => {
    const level = failure ? "warn" : call.method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS ? "debug" : "info";
    if (!logger.isLevelEnabled(level)) return;
    const entry = {
      method: fullName(call.method),
      code: code === undefined ? "OK" : Code[code],
      duration_ms: Math.round((performance.now() - started) * 100) / 100,
      request_id: call.requestId,
      peer: call.ctx.values.get(callerKey)?.service,
    };
    logger[level](failure ? { ...entry, error: failure.rawMessage } : entry, "rpc");
  };
  return (next) => async (request, call) => {
    const started = performance.now();
    const done = record(call.method);
    try {
      const response = await next(request, call);
      done("OK");
      log(call, started, undefined);
      return response;
    } catch (err) {
      let failure: ConnectError;
      if (err instanceof ConnectError) failure = err;
      else {
        logger.error({ err, method: fullName(call.method), request_id: call.requestId }, "unhandled error");
        failure = new ConnectError(`internal error (request id ${call.requestId})`, Code.Internal);
      }
      done(Code[failure.code]);
      log(call, started, failure.code, failure);
      throw failure;
    }
  };
}

/**
 * Puts the caller's proven identity in the handler context. The end user travels as metadata,
 * which only peers listed in `trustedUserPeers` (the gateway) may send: from anyone else it is
 * refused, not ignored, so a misconfigured caller finds out at once.
 */
export function peerAuthentication(trustedUserPeers: readonly string[]): ServerInterceptor {
  return (next) => (request, call) => {
    const service = call.caller();
    if (!service) throw new ConnectError("caller is not proven to be a ShopMesh service", Code.Unauthenticated);
    const edge = trustedUserPeers.includes(service);
    const caller: Caller = { service, edge };
    const userId = call.ctx.header(headers.userId);
    if (userId !== undefined) {
      if (!edge) {
        throw new ConnectError(`${headers.userId} is accepted only from ${trustedUserPeers.join(", ")}`, Code.PermissionDenied);
      }
      if (userId === "") throw new ConnectError(`${headers.userId} is empty`, Code.Unauthenticated);
      const roles = (call.ctx.header(headers.userRoles) ?? "").split(",").filter(Boolean);
      caller.user = { id: userId, roles };
    }
    call.ctx.values.set(callerKey, caller);
    return next(request, call);
  };
}

/** Violations listed in one error: the rest are counted, so the error stays small (see errors.ts). */
export const MAX_LISTED_VIOLATIONS = 20;

/**
 * Enforces the protovalidate rules in the contract, and refuses NUL in any string (nul-bytes.ts):
 * INVALID_ARGUMENT with one violation per bad field, the first MAX_LISTED_VIOLATIONS of them.
 */
export function validation(): ServerInterceptor {
  const validator = createValidator();
  return (next) => (request, call) => {
    const result = validator.validate(call.method.input, request);
    if (result.kind === "error") throw result.error;
    const violations = [...nulViolations(call.method.input, request), ...(result.kind === "invalid" ? result.violations : [])];
    if (violations.length > 0) throw invalidRequest(violations);
    return next(request, call);
  };
}

/** The message names violations while they fit in ~600 characters, then counts the rest. */
function invalidRequest(violations: Violation[]): ConnectError {
  const named: string[] = [];
  let length = 0;
  for (const v of violations.slice(0, MAX_LISTED_VIOLATIONS)) {
    const text = v.toString();
    if (named.length > 0 && length + text.length > 600) break;
    named.push(text);
    length += text.length + 2;
  }
  const more = violations.length - named.length;
  const [details, schema] = violationsToProto(violations.slice(0, MAX_LISTED_VIOLATIONS));
  const message = `invalid request: ${named.join("; ")}${more > 0 ? `; and ${more} more` : ""}`;
  return new ConnectError(message, Code.InvalidArgument, undefined, [{ desc: schema, value: details }]);
}
