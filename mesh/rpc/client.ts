// Typed gRPC clients for calling another service: `client.getUser({ id })` with generated types
// (Connect's Client<S> shape), over mTLS with the upstream's identity checked (or through the
// local sidecar, which does that: transport.ts), and the mesh's resilience policy on every call:
// - a deadline on every call: the default, or the caller's remaining deadline if shorter;
// - retries with exponential backoff and jitter on UNAVAILABLE, only for idempotent methods
//   (NO_SIDE_EFFECTS / IDEMPOTENT in the contract) or requests carrying an idempotency key, and
//   never a failure a sidecar answered itself (it retried at the transport level already);
// - one circuit breaker per upstream: after consecutive failures that say the upstream itself is
//   unhealthy (unreachable, or no answer in time) calls fail fast with UNAVAILABLE until a probe
//   call succeeds; an answer the upstream chose to give (INTERNAL, INVALID_ARGUMENT, an
//   UNAVAILABLE relayed from its own upstream) never counts;
// - reconnects to a lost upstream within half a second of it coming back (bounded backoff);
// - round robin over several addresses, keepalive on idle connections.
// Retries run here rather than in grpc-js's service-config retries because whether a call may be
// retried depends on the request (its idempotency key), not only on the method.
import * as grpc from "@grpc/grpc-js";
import type { DescMethod, DescService, Message } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type CallOptions, type Client } from "@connectrpc/connect";
import { isSpanContextValid, propagation, SpanKind, SpanStatusCode, trace, type Context, type SpanContext } from "@opentelemetry/api";
import type { Registry } from "prom-client";
import { randomUUID } from "node:crypto";
import type { TlsFiles } from "../certs.js";
import { callScopeOf, headers } from "./call-scope.js";
import { Breaker, CircuitOpenError } from "./breaker.js";
import { fromGrpcError, isRelayed, isSidecarReply, upstreamError } from "./errors.js";
import { grpcMethodDefinition } from "./grpc-adapter.js";
import { channelCredentials, checkUpstreamAddresses, type TransportMode } from "./transport.js";
import { rpcMetrics, spansRecorded } from "../telemetry.js";
import { activeContext } from "../async-context.js";
import { childSpanContext, sampled, TRACEPARENT, TRACESTATE, traceparentOf } from "./trace-context.js";
import { defaultResilience, type ResiliencePolicy } from "../topology.js";

export type { ResiliencePolicy };

export interface ClientOptions {
  /** The upstream's service name: its certificate must carry spiffe://shopmesh/<upstream>. */
  upstream: string;
  /** host:port of each replica; several are balanced round robin (IP literals, or one DNS name). */
  addresses: readonly string[];
  /** This service's own certificate and the CA, for mTLS. */
  tls: TlsFiles;
  /** Default "mtls"; "sidecar": plaintext to the local sidecar's listener for the upstream. */
  transport?: TransportMode;
  /** Default: the mesh default (topology.ts); a service's own is topology[upstream].resilience. */
  policy?: Partial<ResiliencePolicy>;
  metrics?: Registry;
}

export type MeshClient<S extends DescService> = Client<S> & { close(): void };

/**
 * Our own refusal to start an attempt whose deadline has already passed. It says nothing about the
 * upstream, so the breaker ignores it. (Marked by its cause: ConnectError's instanceof matches any
 * ConnectError, subclasses included.)
 */
const DEADLINE_PASSED = new Error("deadline passed before the attempt");
const deadlinePassed = (upstream: string) =>
  new ConnectError(`deadline exceeded before calling ${upstream}`, Code.DeadlineExceeded, undefined, undefined, DEADLINE_PASSED);

/**
 * Failures that say the upstream itself is unhealthy: it cannot be reached or says it is
 * unavailable, or it did not answer in time. Not its answers to a request (INTERNAL, UNKNOWN:
 * one request hit a bug; five bad requests must not cut every other caller off), not a
 * failure it relays from further down, not our own refusal to start a call with no time left.
 */
const UPSTREAM_FAILURES = new Set([Code.Unavailable, Code.DeadlineExceeded]);
const upstreamUnhealthy = (err: unknown) =>
  err instanceof ConnectError && err.cause !== DEADLINE_PASSED && UPSTREAM_FAILURES.has(err.code) && !isRelayed(err);

/**
 * An UNAVAILABLE worth another attempt here. Not one relayed from further down (retried where it
 * happened), and not one the sidecar answered itself: it had retried the transport already, or it
 * shed the call; retrying in both layers multiplies load on an upstream that is struggling.
 */
const retryable = (err: unknown) =>
  err instanceof ConnectError && err.code === Code.Unavailable && !isRelayed(err) && !isSidecarReply(err);

export function grpcTarget(addresses: readonly string[]): string {
  if (addresses.length === 0) throw new Error("a client needs at least one address");
  if (addresses.length === 1) return `dns:${addresses[0]}`;
  if (addresses.every((a) => /^\d{1,3}(\.\d{1,3}){3}:\d+$/.test(a))) return `ipv4:${addresses.join(",")}`;
  throw new Error(`several addresses must be IPv4 literals (got ${addresses.join(", ")}); use one DNS name that resolves to every replica`);
}

export function createClient<S extends DescService>(service: S, opts: ClientOptions): MeshClient<S> {
  const policy = { ...defaultResilience, ...opts.policy };
  checkUpstreamAddresses(opts.transport ?? "mtls", opts.addresses);
  const credentials = channelCredentials(opts.transport ?? "mtls", opts.tls, opts.upstream);
  const channel = new grpc.Client(grpcTarget(opts.addresses), credentials, {
    "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
    "grpc.enable_retries": 0,
    // TLS server name and :authority are the upstream's service name (a DNS SAN in its certificate),
    // never the IP we dial; sidecars and ingress route on it.
    "grpc.ssl_target_name_override": opts.upstream,
    "grpc.default_authority": opts.upstream,
    "grpc.keepalive_time_ms": 30_000,
    "grpc.keepalive_timeout_ms": 10_000,
    "grpc.keepalive_permit_without_calls": 1,
    // grpc-js waits 1 s, then up to 120 s, between reconnects: a 2 s outage could cost minutes.
    // Redialling a lost upstream twice a second costs nothing and brings it back within 0.5 s.
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 500,
  });

  const breaker = new Breaker(policy.breakerFailures, policy.breakerHalfOpenAfterMs, upstreamUnhealthy);
  const observe = clientMetrics(opts.metrics);
  const tracer = trace.getTracer("shopmesh");

  const unary = (method: DescMethod) => {
    const def = grpcMethodDefinition(method);
    return async (request: Message, options: CallOptions = {}) => {
      // The span is never made active: nothing runs in it but grpc-js, and entering a context per
      // call costs more than passing it to the metadata that carries it on. A span nobody records
      // (no exporter, or the caller's trace is not sampled) is only ids, made without the SDK.
      const active = activeContext();
      const parent = trace.getSpanContext(active);
      const span = spansRecorded() && (parent === undefined || !isSpanContextValid(parent) || sampled(parent))
        ? tracer.startSpan(`${method.parent.typeName}/${method.name}`, { kind: SpanKind.CLIENT }, active)
        : undefined;
      const call = prepareCall(options, policy.timeoutMs, active, span ? trace.setSpan(active, span) : childSpanContext(parent));
      const attempts = isRetryable(method, request) ? policy.maxAttempts : 1;
      const send = () => {
        if (Date.now() >= call.deadline) throw deadlinePassed(opts.upstream);
        if (options.signal?.aborted) throw new ConnectError("call aborted by the caller", Code.Canceled);
        const metadata = call.metadata();
        return new Promise<unknown>((resolve, reject) => {
          const cancel = () => pending.cancel();
          const pending = channel.makeUnaryRequest(def.path, def.requestSerialize, def.responseDeserialize, request, metadata, { deadline: call.deadline }, (err, value) => {
            options.signal?.removeEventListener("abort", cancel);
            err ? reject(fromGrpcError(err)) : resolve(value);
          });
          options.signal?.addEventListener("abort", cancel, { once: true });
        });
      };
      const done = observe(method);
      try {
        let response: unknown;
        for (let attempt = 1; ; attempt++) {
          try {
            response = await breaker.execute(send);
            break;
          } catch (err) {
            if (attempt >= attempts || !retryable(err)) throw err;
            await sleep(backoffMs(attempt, policy));
          }
        }
        done("OK");
        return response;
      } catch (err) {
        const error = asUpstreamError(err, opts.upstream);
        done(Code[error.code]);
        span?.setStatus({ code: SpanStatusCode.ERROR, message: Code[error.code] });
        throw error;
      } finally {
        span?.end();
      }
    };
  };

  const serverStream = (method: DescMethod) =>
    async function* (request: Message, options: CallOptions = {}) {
      if (breaker.isOpen) throw asUpstreamError(new CircuitOpenError(), opts.upstream);
      const def = grpcMethodDefinition(method);
      const active = activeContext();
      const call = prepareCall(options, undefined, active, active);
      if (options.signal?.aborted) throw new ConnectError("call aborted by the caller", Code.Canceled);
      const stream = channel.makeServerStreamRequest(def.path, def.requestSerialize, def.responseDeserialize, request, call.metadata(), { deadline: call.deadline });
      const cancel = () => stream.cancel();
      options.signal?.addEventListener("abort", cancel, { once: true });
      let ended = false;
      try {
        for await (const message of stream) yield message;
        ended = true;
      } catch (err) {
        ended = true;
        throw upstreamError(fromGrpcError(err as grpc.ServiceError));
      } finally {
        options.signal?.removeEventListener("abort", cancel);
        // A consumer that stops early (break, return) must not leave the call open on the server.
        if (!ended) stream.cancel();
      }
    };

  const client: Record<string, unknown> = {
    close: () => channel.close(),
  };
  for (const method of service.methods) {
    if (method.methodKind === "unary") client[method.localName] = unary(method);
    else if (method.methodKind === "server_streaming") client[method.localName] = serverStream(method);
  }
  return client as MeshClient<S>;
}

/**
 * Deadline and metadata for one call. The caller's request id and trace context travel on; its end
 * user does not (only the gateway may speak for users; a service calls as itself). `trace` is the
 * context whose span the upstream continues (the SDK's propagator writes it), or the span context
 * of an unrecorded span (written directly).
 */
function prepareCall(options: CallOptions, defaultTimeoutMs: number | undefined, active: Context, traceParent: Context | SpanContext) {
  const scope = callScopeOf(active);
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
  let deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
  if (scope?.deadline !== undefined) deadline = Math.min(deadline, scope.deadline);
  const extra = options.headers ? [...new Headers(options.headers)] : [];
  const given = extra.find(([key]) => key === headers.requestId)?.[1];
  const requestId = given ?? scope?.requestId ?? randomUUID(); // an edge's own id wins (the gateway has no call scope)
  const direct = "traceId" in traceParent ? traceParent : undefined;
  const traceparent = direct && traceparentOf(direct);
  const tracestate = direct?.traceState?.serialize();
  return {
    deadline,
    /** Fresh per attempt (grpc-js keeps the metadata it was given). */
    metadata() {
      const metadata = new grpc.Metadata();
      for (const [key, value] of extra) metadata.set(key, value);
      metadata.set(headers.requestId, requestId);
      if (traceparent) {
        metadata.set(TRACEPARENT, traceparent);
        if (tracestate) metadata.set(TRACESTATE, tracestate);
      } else propagation.inject(traceParent as Context, metadata, { set: (carrier, key, value) => carrier.set(key, value) });
      return metadata;
    },
  };
}

/** Exponential backoff with jitter: half the step fixed, half random, so retries spread out. */
function backoffMs(attempt: number, policy: ResiliencePolicy): number {
  const step = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * 2 ** (attempt - 1));
  return step / 2 + (Math.random() * step) / 2;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function isRetryable(method: DescMethod, request: Message): boolean {
  if (method.idempotency === MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS) return true;
  if (method.idempotency === MethodOptions_IdempotencyLevel.IDEMPOTENT) return true;
  const key = (request as { idempotencyKey?: unknown }).idempotencyKey;
  return typeof key === "string" && key.length > 0;
}

/** The error a caller sees, remembered as an upstream's so a handler rethrowing it relays it. */
function asUpstreamError(err: unknown, upstream: string): ConnectError {
  if (err instanceof CircuitOpenError) {
    return upstreamError(new ConnectError(`circuit open for upstream ${upstream}: failing fast`, Code.Unavailable));
  }
  return upstreamError(ConnectError.from(err));
}

function clientMetrics(registry: Registry | undefined) {
  return registry ? rpcMetrics(registry, "client") : (_method: DescMethod) => (_code: string) => {};
}
