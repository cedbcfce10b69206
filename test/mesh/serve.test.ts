// What serve() gives every service: health that follows readiness, server reflection that
// buf curl can use, metrics, trace propagation, and a graceful drain.
import { beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { Code } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import { context, ROOT_CONTEXT, SpanKind, trace, TraceFlags, type SpanContext } from "@opentelemetry/api";
import { InMemorySpanExporter } from "@opentelemetry/sdk-trace-base";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { healthClient, statusName } from "../../mesh/rpc/health-client.js";
import { createLogger, initTracing, serveMetrics } from "../../mesh/telemetry.js";
import { serve } from "../../mesh/rpc/serve.js";
import { Writable } from "node:stream";
import { Registry } from "prom-client";
import { eventually } from "../support/eventually.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { clientFor, rejection, sleep, startServer } from "../support/servers.js";

const spans = new InMemorySpanExporter();
initTracing("test", spans);

let pki: TestPki;
beforeAll(async () => {
  pki = await createTestPki();
});

async function rawCredentials(identity = "client") {
  const tls = await pki.tls(identity);
  return grpc.credentials.createSsl(Buffer.from(tls.ca), Buffer.from(tls.key), Buffer.from(tls.cert));
}

describe("health", () => {
  it("answers SERVING while ready and NOT_SERVING while not", async () => {
    let ready = true;
    const server = await startServer(pki, "identity", IdentityService, {}, { ready: async () => ready, readyIntervalMs: 50 });
    const health = healthClient(server.address, "identity", await pki.tls("client"));
    const check = (service: string) => health.check(service);

    expect(await check("")).toBe("SERVING");
    expect(await check("shop.identity.v1.IdentityService")).toBe("SERVING");
    ready = false;
    await sleep(150);
    expect(await check("shop.identity.v1.IdentityService")).toBe("NOT_SERVING");
    ready = true;
    await sleep(150);
    expect(await check("")).toBe("SERVING");
    health.close();
    await server.drain();
  });
});

describe("reflection", () => {
  it("lets buf curl discover and call the service over mTLS", async () => {
    const server = await startServer(pki, "identity", IdentityService, { getJwks: () => ({ keys: [{ kid: "reflected", kty: "OKP" }] }) });
    const certs = await pki.dir(["client"]);
    const buf = join(process.cwd(), "node_modules/.bin/buf");
    const tlsArgs = ["--protocol", "grpc", "--http2-prior-knowledge", "--cacert", join(certs, "ca.crt"), "--cert", join(certs, "client.crt"), "--key", join(certs, "client.key"), "--servername", "identity"];
    const run = (args: string[]) => promisify(execFile)(buf, ["curl", ...tlsArgs, ...args], { timeout: 20_000 });

    const listed = await run(["--list-services", `https://${server.address}`]);
    expect(listed.stdout).toContain("shop.identity.v1.IdentityService");
    const called = await run(["--data", "{}", `https://${server.address}/shop.identity.v1.IdentityService/GetJwks`]);
    expect(JSON.parse(called.stdout)).toEqual({ keys: [{ kid: "reflected", kty: "OKP" }] });
    await server.drain();
  });

  it("serves the file descriptors of the contract and its imports", async () => {
    const server = await startServer(pki, "identity", IdentityService, {});
    const def = protoLoader.loadSync("grpc/reflection/v1/reflection.proto", {
      includeDirs: [join(process.cwd(), "node_modules/@grpc/reflection/build/proto")],
    });
    const pkg = grpc.loadPackageDefinition(def) as unknown as { grpc: { reflection: { v1: { ServerReflection: grpc.ServiceClientConstructor } } } };
    const client = new pkg.grpc.reflection.v1.ServerReflection(server.address, await rawCredentials(), { "grpc.ssl_target_name_override": "identity" });
    const stream = (client as unknown as { serverReflectionInfo(): grpc.ClientDuplexStream<object, { fileDescriptorResponse?: { fileDescriptorProto: Buffer[] } }> }).serverReflectionInfo();
    const response = new Promise<{ fileDescriptorResponse?: { fileDescriptorProto: Buffer[] } }>((resolve) => stream.once("data", resolve));
    stream.write({ fileContainingSymbol: "shop.identity.v1.IdentityService" });
    const files = (await response).fileDescriptorResponse?.fileDescriptorProto.map((b) => b.toString("latin1")) ?? [];
    stream.end();
    client.close();
    expect(files.some((f) => f.includes("shop/identity/v1/identity.proto"))).toBe(true);
    expect(files.some((f) => f.includes("google/api/annotations.proto"))).toBe(true);
    await server.drain();
  });
});

describe("observability", () => {
  it("counts calls by method and code on the metrics port", async () => {
    const server = await startServer(pki, "identity", IdentityService, { getJwks: () => ({ keys: [] }) });
    const client = await clientFor(pki, IdentityService, "identity", [server.address]);
    await client.getJwks({});
    await rejection(client.getUser({ id: "not-a-uuid" }));
    const http = await serveMetrics(server.metrics, 0);
    const text = await (await fetch(`http://127.0.0.1:${(http.address() as { port: number }).port}/metrics`)).text();
    expect(text).toMatch(/grpc_server_handled_total\{grpc_service="shop.identity.v1.IdentityService",grpc_method="GetJwks",grpc_code="OK"\} 1/);
    expect(text).toMatch(/grpc_server_handled_total\{[^}]*grpc_method="GetUser",grpc_code="InvalidArgument"\} 1/);
    expect(text).toMatch(/grpc_server_handling_seconds_bucket\{[^}]*grpc_method="GetJwks"/);
    http.close();
    client.close();
    await server.drain();
  });

  it("logs every failure and every call that may change something; a read that succeeds only at debug", async () => {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({ write: (chunk, _enc, done) => (lines.push(JSON.parse(String(chunk))), done()) });
    const logger = createLogger("test", "info", sink);
    const server = await serve({
      service: IdentityService,
      impl: { getJwks: () => ({ keys: [] }), updateProfile: () => ({}), getUser: () => ({}) } as never,
      tls: await pki.tls("identity"),
      logger,
      metrics: new Registry(),
      host: "127.0.0.1",
      port: 0,
    });
    const client = await clientFor(pki, IdentityService, "identity", [`127.0.0.1:${server.port}`]);
    const rpcLines = () => lines.filter((l) => l.msg === "rpc").map((l) => [String(l.method).split("/")[1], l.code, l.level]);
    await client.getJwks({}); // NO_SIDE_EFFECTS, succeeds
    await client.updateProfile({ id: "0190a000-0000-7000-8000-0000000000aa", displayName: "Ada" }); // IDEMPOTENT: changes something
    await rejection(client.getUser({ id: "not-a-uuid" })); // a read that fails
    await eventually(() => rpcLines().length, (n) => n >= 2);
    expect(rpcLines()).toEqual([["UpdateProfile", "OK", 30], ["GetUser", "InvalidArgument", 40]]);

    logger.level = "debug"; // the read's line is there for whoever asks for debug
    await client.getJwks({});
    await eventually(() => rpcLines().length, (n) => n >= 3);
    expect(rpcLines()[2]).toEqual(["GetJwks", "OK", 20]);
    client.close();
    await server.drain();
  });

  it("continues one trace across two hops (W3C traceparent)", async () => {
    const b = await startServer(pki, "identity", IdentityService, { getJwks: () => ({ keys: [] }) });
    const toB = await clientFor(pki, IdentityService, "identity", [b.address], { as: "catalog" });
    const a = await startServer(pki, "catalog", IdentityService, { getJwks: () => toB.getJwks({}) });
    const toA = await clientFor(pki, IdentityService, "catalog", [a.address]);
    spans.reset();
    await toA.getJwks({});
    const server = spans.getFinishedSpans().filter((s) => s.name.endsWith("/GetJwks") && s.kind === 1 /* SERVER */);
    expect(server).toHaveLength(2);
    expect(server[0]!.spanContext().traceId).toBe(server[1]!.spanContext().traceId);
    toA.close();
    toB.close();
    await Promise.all([a.drain(), b.drain()]);
  });

  it("records the spans of a sampled caller's trace, and none of an unsampled one's, which it still continues", async () => {
    let seen: SpanContext | undefined;
    const server = await startServer(pki, "identity", IdentityService, {
      getJwks: () => {
        seen = trace.getActiveSpan()?.spanContext();
        return { keys: [] };
      },
    });
    const client = await clientFor(pki, IdentityService, "identity", [server.address]);
    const callIn = (traceFlags: TraceFlags) => {
      const parent = { traceId: randomBytes(16).toString("hex"), spanId: randomBytes(8).toString("hex"), traceFlags, isRemote: true };
      return context.with(trace.setSpan(ROOT_CONTEXT, trace.wrapSpanContext(parent)), () => client.getJwks({})).then(() => parent.traceId);
    };
    spans.reset();
    const sampledTrace = await callIn(TraceFlags.SAMPLED);
    expect(seen?.traceId).toBe(sampledTrace);
    const recorded = spans.getFinishedSpans().filter((s) => s.spanContext().traceId === sampledTrace);
    expect(recorded.map((s) => s.kind).sort()).toEqual([SpanKind.SERVER, SpanKind.CLIENT]);
    spans.reset();
    const unsampledTrace = await callIn(TraceFlags.NONE);
    expect(seen?.traceId).toBe(unsampledTrace);
    expect(spans.getFinishedSpans()).toHaveLength(0);
    client.close();
    await server.drain();
  });
});

describe("graceful drain", () => {
  it("lets in-flight calls finish, refuses new ones, goes NOT_SERVING first, and is not held up by health watchers", async () => {
    const server = await startServer(pki, "identity", IdentityService, {
      async getJwks() {
        await sleep(400);
        return { keys: [{ kid: "finished" }] };
      },
    });
    const client = await clientFor(pki, IdentityService, "identity", [server.address], { policy: { maxAttempts: 1 } });
    // A load balancer watching health learns of the drain before connections go away.
    const health = healthClient(server.address, "identity", await pki.tls("client"));
    const watch = health.watch();
    const statuses: string[] = [];
    watch.on("data", (m) => statuses.push(statusName(m.status)));
    watch.on("error", () => {});
    await eventually(() => statuses.length, (n) => n === 1); // watching (polled: a loaded machine is slow to connect)
    const inFlight = client.getJwks({});
    await sleep(100);
    const drained = server.drain();
    await eventually(() => statuses, (s) => s.length === 2);
    expect(statuses).toEqual(["SERVING", "NOT_SERVING"]);
    const late = await rejection(client.getJwks({}));
    expect(late.code).toBe(Code.Unavailable);
    expect((await inFlight).keys[0]?.kid).toBe("finished");
    const drainStarted = Date.now();
    await drained; // the Watch stream is still open: it must not hold the drain until its timeout
    expect(Date.now() - drainStarted).toBeLessThan(2_000);
    health.close();
    client.close();
  });
});
