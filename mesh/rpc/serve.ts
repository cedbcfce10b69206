// serve(): a service's Connect handlers (ServiceImpl of its generated descriptor) served over
// gRPC with mutual TLS (or plaintext on loopback behind a sidecar: transport.ts), grpc.health.v1,
// server reflection and graceful drain, every call going through the mesh's interceptor chain.
import * as grpc from "@grpc/grpc-js";
import { createRequire } from "node:module";
import { create, toBinary, type DescFile, type DescMethod, type DescService, type Message } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type { Registry } from "prom-client";
import { randomUUID } from "node:crypto";
import type { TlsFiles } from "../certs.js";
import { CallContext } from "./call-context.js";
import { headers as meshHeaders } from "./call-scope.js";
import { toGrpcStatus } from "./errors.js";
import { grpcServiceDefinition, methodPath } from "./grpc-adapter.js";
import { healthDefinition, type ServingStatus } from "./health-client.js";
import {
  HealthCheckResponse_ServingStatus, HealthCheckResponseSchema, HealthListResponseSchema,
  type HealthCheckRequest, type HealthCheckResponse, type HealthListResponse,
} from "../../gen/health/v1/health_pb.js";
import {
  callContext, callOutcome, compose, peerAuthentication, validation,
  type CallInfo, type Next,
} from "./interceptors.js";
import type { Logger } from "../telemetry.js";
import { checkListenHost, serverTransport, type TransportMode } from "./transport.js";

export interface ServeOptions<S extends DescService> {
  service: S;
  impl: ServiceImpl<S>;
  /** The process's own certificate and the CA (in sidecar mode: only to know its own identity). */
  tls: TlsFiles;
  /** Default "mtls". In "sidecar" mode `host` must be a loopback address. */
  transport?: TransportMode;
  logger: Logger;
  metrics: Registry;
  /** Port to listen on; 0 picks a free one (see RunningServer.port). */
  port: number;
  host?: string;
  /** Readiness: health answers SERVING only while this resolves true (e.g. the database answers). */
  ready?: () => Promise<boolean>;
  readyIntervalMs?: number;
  /** Peers allowed to send end-user metadata. */
  trustedUserPeers?: readonly string[];
  /** How long in-flight calls may take to finish on drain before they are cancelled. */
  drainTimeoutMs?: number;
}

export interface RunningServer {
  port: number;
  /** Health goes NOT_SERVING, new calls are refused, in-flight calls finish (up to drainTimeoutMs). */
  drain(): Promise<void>;
}

type Transport = ReturnType<typeof serverTransport>;

/**
 * Refuses, before any handler runs, a call whose caller is not proven to be a ShopMesh service: a
 * certificate that names none (the CA proves a certificate is ours, not that its holder is one of
 * our services), or behind a sidecar an XFCC that breaks its rules (transport.ts). It guards every
 * service on the server, health and reflection included (they have no interceptor chain of their
 * own); application calls then learn who is calling in peerAuthentication.
 */
function meshPeersOnly(logger: Logger, transport: Transport): grpc.ServerInterceptor {
  return (method, call) => {
    // Proven before the handler runs (from the connection's certificate, read once per connection:
    // transport.ts; or from the call's XFCC behind a sidecar) and handed to the handler on the
    // call's Metadata object under a symbol: nothing sent on the wire can set it, so there is no
    // header to remove first. (grpc-js hands the handler the object its interceptors forwarded.)
    const proven = transport.needsMetadata ? undefined : transport.caller(call);
    const openHealth = !proven && method.path.startsWith("/grpc.health.v1.Health/") && transport.openHealth(call);
    return new grpc.ServerInterceptingCall(call, {
      start(next) {
        next({
          onReceiveMetadata(metadata, forward) {
            const caller = proven ?? transport.caller(call, metadata);
            if (caller) (metadata as Verified)[VERIFIED_CALLER] = caller;
            if (caller || openHealth) return forward(metadata);
            logger.warn({ method: method.path, peer: call.getPeer() }, "refused a caller not proven to be a ShopMesh service");
            call.sendStatus({ code: grpc.status.UNAUTHENTICATED, details: "caller is not proven to be a ShopMesh service" });
          },
        });
      },
    });
  };
}

/** Where meshPeersOnly leaves the caller it proved, for the handler's chain. */
const VERIFIED_CALLER = Symbol("verified caller");
type Verified = grpc.Metadata & { [VERIFIED_CALLER]?: string };

// Keepalive: detect dead peers on idle connections; allow clients' pings at our client's interval.
const SERVER_OPTIONS: grpc.ServerOptions = {
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.http2.min_ping_interval_without_data_ms": 10_000,
  "grpc.max_receive_message_length": 4 * 1024 * 1024,
};

export async function serve<S extends DescService>(opts: ServeOptions<S>): Promise<RunningServer> {
  const { service, logger } = opts;
  const host = opts.host ?? "0.0.0.0";
  checkListenHost(opts.transport ?? "mtls", host);
  const transport = serverTransport(opts.transport ?? "mtls", opts.tls);
  const server = new grpc.Server({ ...SERVER_OPTIONS, interceptors: [meshPeersOnly(logger, transport)] });
  const calls = new InFlight();
  const chain = (handler: Next) =>
    compose(
      [callContext(), callOutcome(logger, opts.metrics), peerAuthentication(opts.trustedUserPeers ?? ["gateway"]), validation()],
      handler,
    );

  const handlers: grpc.UntypedServiceImplementation = {};
  for (const method of service.methods) {
    const fn = (opts.impl as Record<string, unknown>)[method.localName];
    const impl =
      typeof fn === "function"
        ? (fn.bind(opts.impl) as (...args: unknown[]) => unknown)
        : () => {
            throw new ConnectError(`${methodPath(method)} is not implemented`, Code.Unimplemented);
          };
    if (method.methodKind === "unary") handlers[method.localName] = unaryHandler(method, chain((req, call) => Promise.resolve(impl(req, call.ctx))), calls);
    else if (method.methodKind === "server_streaming") handlers[method.localName] = serverStreamHandler(method, impl, chain, calls);
    else throw new Error(`${methodPath(method)}: ${method.methodKind} methods are not supported by the mesh runtime`);
  }
  server.addService(grpcServiceDefinition(service), handlers);

  const health = addHealth(server, { "": "NOT_SERVING", [service.typeName]: "NOT_SERVING" });
  addReflection(server, service);

  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${host.includes(":") ? `[${host}]` : host}:${opts.port}`, transport.credentials, (err, bound) => (err ? reject(err) : resolve(bound))),
  );

  let draining = false;
  const setStatus = (status: "SERVING" | "NOT_SERVING") => {
    health.setStatus("", status);
    health.setStatus(service.typeName, status);
  };
  const probe = async () => {
    if (draining) return;
    const ok = opts.ready ? await opts.ready().catch(() => false) : true;
    if (!draining) setStatus(ok ? "SERVING" : "NOT_SERVING");
  };
  await probe();
  const probeTimer = setInterval(probe, opts.readyIntervalMs ?? 2_000);
  probeTimer.unref();

  return {
    port,
    async drain() {
      if (draining) return;
      draining = true;
      clearInterval(probeTimer);
      setStatus("NOT_SERVING");
      // New calls are refused from here on; calls in flight go on.
      const closed = new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      if (!(await calls.idle(opts.drainTimeoutMs ?? 10_000))) {
        logger.warn({ in_flight: calls.count }, "drain timeout: cancelling calls still in flight");
        calls.abort(new ConnectError("server shutting down", Code.Unavailable));
      }
      // Every handler has answered. Streams that never end on their own (health Watch) would hold
      // tryShutdown forever: give the last responses a moment to flush, then close what is left.
      await Promise.race([closed, sleep(500)]);
      server.forceShutdown();
    },
  };
}

/**
 * grpc.health.v1 Check, Watch and List, as grpc-health-check serves them, from the code generated
 * from its .proto (health-client.ts), but a watcher hears only changes, as the protocol says: the
 * readiness probe sets the status every 2 s.
 */
function addHealth(server: grpc.Server, initial: Record<string, ServingStatus>) {
  const statuses = new Map(Object.entries(initial));
  const watchers = new Set<{ service: string; send(status: ServingStatus): void }>();
  const response = (status: ServingStatus) => create(HealthCheckResponseSchema, { status: HealthCheckResponse_ServingStatus[status] });
  server.addService(healthDefinition, {
    check: (call: grpc.ServerUnaryCall<HealthCheckRequest, HealthCheckResponse>, callback: grpc.sendUnaryData<HealthCheckResponse>) => {
      const status = statuses.get(call.request.service);
      if (status) callback(null, response(status));
      else callback({ code: grpc.status.NOT_FOUND, details: `Health status unknown for service ${call.request.service}` });
    },
    watch: (call: grpc.ServerWritableStream<HealthCheckRequest, HealthCheckResponse>) => {
      const watcher = { service: call.request.service, send: (status: ServingStatus) => call.write(response(status)) };
      watchers.add(watcher);
      call.on("cancelled", () => watchers.delete(watcher));
      watcher.send(statuses.get(watcher.service) ?? "SERVICE_UNKNOWN");
    },
    list: (_call: unknown, callback: grpc.sendUnaryData<HealthListResponse>) =>
      callback(null, create(HealthListResponseSchema, { statuses: Object.fromEntries([...statuses].map(([name, status]) => [name, response(status)])) })),
  });
  return {
    setStatus(service: string, status: ServingStatus) {
      if (statuses.get(service) === status) return;
      statuses.set(service, status);
      for (const watcher of watchers) if (watcher.service === service) watcher.send(status);
    },
  };
}

/**
 * Server reflection (grpc.reflection.v1 and v1alpha, for buf curl and grpcurl), loaded on its first
 * call: @grpc/reflection, with proto-loader and protobufjs, parses its .proto files and indexes the
 * contract when it is constructed, ~2.2 MiB of heap and ~4 MiB of RSS per process (measured) for a
 * tool someone may use now and then. grpc-js needs a definition at addService, but for a method
 * only its path and kind; its messages are (de)serialized by the package's own definition, which
 * it hands to this stand-in for a server from its addToServer() once loaded (synchronously: a
 * request may need decoding before any promise could resolve).
 */
function addReflection(server: grpc.Server, service: DescService): void {
  type Method = { definition: grpc.MethodDefinition<unknown, unknown>; handler: grpc.handleBidiStreamingCall<unknown, unknown> };
  let loaded: Map<string, Method> | undefined;
  const load = (): Map<string, Method> => {
    if (loaded) return loaded;
    const { ReflectionService } = createRequire(import.meta.url)("@grpc/reflection") as typeof import("@grpc/reflection");
    const methods = new Map<string, Method>();
    const standIn = {
      addService(definition: grpc.ServiceDefinition, impl: grpc.UntypedServiceImplementation) {
        const def = definition.ServerReflectionInfo!;
        methods.set(def.path, { definition: def, handler: impl.ServerReflectionInfo as Method["handler"] });
      },
    };
    new ReflectionService({ [service.typeName]: { fileDescriptorProtos: fileDescriptorProtos(service.file) } } as never).addToServer(standIn as never);
    return (loaded = methods);
  };
  for (const version of ["v1", "v1alpha"]) {
    const path = `/grpc.reflection.${version}.ServerReflection/ServerReflectionInfo`;
    const real = () => load().get(path)!;
    const ServerReflectionInfo: grpc.MethodDefinition<unknown, unknown> = {
      path,
      requestStream: true,
      responseStream: true,
      requestSerialize: (value) => real().definition.requestSerialize(value),
      requestDeserialize: (bytes) => real().definition.requestDeserialize(bytes),
      responseSerialize: (value) => real().definition.responseSerialize(value),
      responseDeserialize: (bytes) => real().definition.responseDeserialize(bytes),
    };
    server.addService({ ServerReflectionInfo }, { ServerReflectionInfo: (call: grpc.ServerDuplexStream<unknown, unknown>) => real().handler(call) });
  }
}

/** All files a service's file depends on, as serialized FileDescriptorProtos, for reflection. */
function fileDescriptorProtos(file: DescFile): Buffer[] {
  const seen = new Map<string, Buffer>();
  const visit = (f: DescFile) => {
    if (seen.has(f.proto.name)) return;
    seen.set(f.proto.name, Buffer.from(toBinary(FileDescriptorProtoSchema, f.proto)));
    f.dependencies.forEach(visit);
  };
  visit(file);
  return [...seen.values()];
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The application calls being handled, so a drain knows when they are done. */
class InFlight {
  count = 0;
  readonly #shutdown = new AbortController();
  #onIdle: (() => void)[] = [];
  /** Aborts when a drain gives up waiting: handlers see it through ctx.signal. */
  readonly signal = this.#shutdown.signal;

  begin(): () => void {
    this.count++;
    return () => {
      if (--this.count === 0) this.#onIdle.splice(0).forEach((resolve) => resolve());
    };
  }

  /** Resolves true once no call is in flight, false if `timeoutMs` passes first. */
  idle(timeoutMs: number): Promise<boolean> {
    if (this.count === 0) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.#onIdle.push(() => (clearTimeout(timer), resolve(true)));
    });
  }

  abort(reason: unknown): void {
    this.#shutdown.abort(reason);
  }
}

type AnyCall = grpc.ServerUnaryCall<Message, unknown> | grpc.ServerWritableStream<Message, unknown>;

/** The handler context and call scope for one incoming gRPC call. */
function callInfo(method: DescMethod, call: AnyCall, shutdownSignal: AbortSignal): CallInfo {
  const rawDeadline = call.getDeadline();
  const deadline = rawDeadline instanceof Date ? rawDeadline.getTime() : Number.isFinite(rawDeadline) ? rawDeadline : undefined;
  const ctx = new CallContext(method, call.metadata, deadline, shutdownSignal, (listener) => (call.cancelled ? listener() : call.once("cancelled", listener)));
  const requestId = ctx.header(meshHeaders.requestId) ?? randomUUID();
  return { method, ctx, requestId, caller: () => (call.metadata as Verified)[VERIFIED_CALLER], deadline };
}

function unaryHandler(method: DescMethod, next: Next, calls: InFlight): grpc.handleUnaryCall<Message, unknown> {
  return (call, callback) => {
    const done = calls.begin();
    const info = callInfo(method, call, calls.signal);
    // then(ok, failed) and no finally(): each is a promise and a reaction more per call.
    next(call.request, info).then(
      (response) => {
        callback(null, create(method.output, response as never));
        info.ctx.release();
        done();
      },
      (err) => {
        callback(toGrpcStatus(ConnectError.from(err)));
        info.ctx.release();
        done();
      },
    );
  };
}

function serverStreamHandler(
  method: DescMethod,
  impl: (...args: unknown[]) => unknown,
  chain: (handler: Next) => Next,
  calls: InFlight,
): grpc.handleServerStreamingCall<Message, unknown> {
  return (call) => {
    const done = calls.begin();
    const info = callInfo(method, call, calls.signal);
    const run = chain(async (request, { ctx }) => {
      for await (const message of impl(request, ctx) as AsyncIterable<unknown>) {
        if (ctx.signal.aborted) break; // the client went away: stop the handler's generator
        if (!call.write(create(method.output, message as never))) {
          // Backpressure: wait for the client to read, unless it cancels or the deadline passes.
          await new Promise<void>((resolve) => {
            const stop = () => {
              call.off("drain", stop);
              ctx.signal.removeEventListener("abort", stop);
              resolve();
            };
            call.once("drain", stop);
            ctx.signal.addEventListener("abort", stop, { once: true });
          });
        }
      }
      if (ctx.signal.aborted) throw ConnectError.from(ctx.signal.reason);
    });
    run(call.request, info)
      .then(
        () => call.end(),
        (err) => call.emit("error", toGrpcStatus(ConnectError.from(err))),
      )
      .finally(() => {
        info.ctx.release();
        done();
      });
  };
}
