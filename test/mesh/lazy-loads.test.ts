// What a service process loads only when it is used (issue 10's memory row): server reflection
// (@grpc/reflection, with proto-loader and protobufjs) on its first call, the OTLP exporter only when
// OTEL_EXPORTER_OTLP_ENDPOINT is set; and grpc.health.v1 served without grpc-health-check, which
// this file still uses as the reference client of the protocol.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { build } from "esbuild";
import * as grpc from "@grpc/grpc-js";
import { service as referenceHealth } from "grpc-health-check";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { eventually } from "../support/eventually.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { startServer, type StubServer } from "../support/servers.js";

/**
 * Runs `code` (an ES module importing the sources) in a fresh node process, through tsx or
 * `bundled` as scripts/build.mjs bundles a process (code split into chunks, CommonJS packages in
 * them, which a dynamic import sees differently); its last stdout line as JSON.
 */
async function inFreshProcess(code: string, env: Record<string, string> = {}, bundled = false): Promise<any> {
  const preamble = `
    import { createRequire } from "node:module";
    const loaded = () => [...new Set(Object.keys(createRequire(import.meta.url).cache)
      .map((f) => f.match(/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//)?.[1])
      .filter((p) => ["@grpc/reflection", "@grpc/proto-loader", "protobufjs", "grpc-health-check", "@opentelemetry/exporter-trace-otlp-http"].includes(p)))].sort();
  `;
  const out = bundled ? mkdtempSync(join(tmpdir(), "shopmesh-lazy-")) : undefined;
  if (out) {
    symlinkSync(join(process.cwd(), "node_modules"), join(out, "node_modules")); // for the packages left outside
    await build({
      stdin: { contents: preamble + code, resolveDir: process.cwd(), sourcefile: "check.ts", loader: "ts" },
      outdir: out, bundle: true, splitting: true, format: "esm", platform: "node", target: "node20", external: ["pino", "thread-stream"], logLevel: "warning",
      banner: { js: 'import { createRequire as __createRequire } from "node:module"; const require = __createRequire(import.meta.url);' },
    });
  }
  try {
    const args = out ? [join(out, "stdin.js")] : ["--import", "tsx", "--input-type=module", "-e", preamble + code];
    const { stdout } = await promisify(execFile)(process.execPath, args, {
      cwd: process.cwd(),
      env: { ...process.env, OTEL_EXPORTER_OTLP_ENDPOINT: "", ...env },
      timeout: 30_000,
    });
    return JSON.parse(stdout.trim().split("\n").pop()!);
  } finally {
    if (out) rmSync(out, { recursive: true, force: true });
  }
}

describe("server reflection", () => {
  it("is loaded on its first call, v1 and v1alpha alike, and health needs no protobufjs", async () => {
    const result = await inFreshProcess(`
      import * as grpc from "@grpc/grpc-js";
      import { createTestPki } from "./test/support/pki.ts";
      import { startServer } from "./test/support/servers.ts";
      import { healthClient } from "./mesh/rpc/health-client.ts";
      import { IdentityService } from "./gen/shop/identity/v1/identity_pb.ts";
      const pki = await createTestPki();
      const server = await startServer(pki, "identity", IdentityService, {});
      const tls = await pki.tls("client");
      const health = healthClient(server.address, "identity", tls);
      const status = await health.check("", 5_000);
      health.close();
      const atStart = loaded();
      const client = new grpc.Client(server.address, grpc.credentials.createSsl(Buffer.from(tls.ca), Buffer.from(tls.key), Buffer.from(tls.cert)), { "grpc.ssl_target_name_override": "identity" });
      const listServices = (version) => new Promise((resolve, reject) => {
        const call = client.makeBidiStreamRequest("/grpc.reflection." + version + ".ServerReflection/ServerReflectionInfo", (b) => b, (b) => b);
        call.once("data", (reply) => (call.end(), resolve(reply.toString("latin1"))));
        call.once("error", reject);
        call.write(Buffer.from([0x3a, 0x00])); // field 7 (list_services) = ""
      });
      const replies = [await listServices("v1alpha"), await listServices("v1")];
      client.close();
      await server.drain();
      console.log(JSON.stringify({ status, atStart, after: loaded(), listed: replies.map((r) => r.includes("shop.identity.v1.IdentityService")) }));
    `);
    expect(result.status).toBe("SERVING");
    expect(result.atStart).toEqual([]);
    expect(result.after).toEqual(expect.arrayContaining(["@grpc/reflection", "protobufjs"]));
    expect(result.listed).toEqual([true, true]);
  });
});

describe("the OTLP exporter", () => {
  it("is not loaded without OTEL_EXPORTER_OTLP_ENDPOINT", async () => {
    const result = await inFreshProcess(`
      import { initTracing, spansRecorded } from "./mesh/telemetry.ts";
      initTracing("lazy-test");
      await new Promise((r) => setTimeout(r, 200));
      console.log(JSON.stringify({ recorded: spansRecorded(), loaded: loaded() }));
    `);
    expect(result).toEqual({ recorded: false, loaded: [] });
  });

  it.each([["through tsx", false], ["bundled", true]])("with an endpoint, exports the spans made before its import finished (%s)", async (_, bundled) => {
    const bodies: Buffer[] = [];
    const receiver = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c)).on("end", () => {
        if (req.url === "/v1/traces") bodies.push(Buffer.concat(chunks));
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((resolve) => receiver.listen(0, "127.0.0.1", resolve));
    const endpoint = `http://127.0.0.1:${(receiver.address() as { port: number }).port}`;
    try {
      const result = await inFreshProcess(`
        import { trace } from "@opentelemetry/api";
        import { initTracing, shutdownTracing, spansRecorded } from "./mesh/telemetry.ts";
        initTracing("lazy-test");
        // In the same tick as initTracing, so before its import() of the exporter can resolve. (Node 20
        // has not read the package yet here; Node 24's loader may already have run it synchronously,
        // but the promise initTracing waits on still settles later.)
        trace.getTracer("lazy-test").startSpan("made-before-the-exporter-loaded").end();
        await shutdownTracing(); // flushes the batch through the exporter once it has loaded
        console.log(JSON.stringify({ recorded: spansRecorded(), loaded: loaded() }));
      `, { OTEL_EXPORTER_OTLP_ENDPOINT: endpoint }, bundled);
      expect(result.recorded).toBe(true);
      expect(result.loaded).toEqual(bundled ? [] : ["@opentelemetry/exporter-trace-otlp-http"]);
      expect(Buffer.concat(bodies).toString("latin1")).toContain("made-before-the-exporter-loaded");
    } finally {
      receiver.close();
    }
  });
});

describe("grpc.health.v1 without grpc-health-check", () => {
  let pki: TestPki;
  let server: StubServer;
  let client: grpc.Client & Record<string, Function>;
  beforeAll(async () => {
    pki = await createTestPki();
    server = await startServer(pki, "identity", IdentityService, {}, { readyIntervalMs: 50 });
    const tls = await pki.tls("client");
    const Health = grpc.makeClientConstructor(referenceHealth, "Health");
    client = new Health(server.address, grpc.credentials.createSsl(Buffer.from(tls.ca), Buffer.from(tls.key), Buffer.from(tls.cert)), { "grpc.ssl_target_name_override": "identity" }) as never;
  });
  afterAll(async () => {
    client.close();
    await server.drain();
  });
  const unary = (name: string, request: object) =>
    new Promise<any>((resolve) => client[name]!(request, (err: grpc.ServiceError | null, res: unknown) => resolve(err ? { code: grpc.status[err.code], details: err.details } : res)));

  it("answers Check and List as grpc-health-check did, to its own client", async () => {
    expect(await unary("check", { service: "" })).toEqual({ status: "SERVING" });
    expect(await unary("check", { service: "shop.identity.v1.IdentityService" })).toEqual({ status: "SERVING" });
    expect(await unary("check", { service: "nope" })).toEqual({ code: "NOT_FOUND", details: "Health status unknown for service nope" });
    expect(await unary("list", {})).toEqual({ statuses: { "": { status: "SERVING" }, "shop.identity.v1.IdentityService": { status: "SERVING" } } });
  });

  it("tells a watcher of an unknown service SERVICE_UNKNOWN, and a watcher only of changes", async () => {
    const watch = (service: string) => {
      const seen: string[] = [];
      const call = client.watch!({ service }) as grpc.ClientReadableStream<{ status: string }>;
      call.on("data", (m) => seen.push(m.status)).on("error", () => {});
      return { seen, call };
    };
    const unknown = watch("nope");
    const known = watch("");
    await eventually(() => unknown.seen.length + known.seen.length, (n) => n === 2, 15_000); // both watching (a busy machine is slow to connect)
    await new Promise((r) => setTimeout(r, 500)); // then ten readiness probes, each setting SERVING again
    unknown.call.cancel();
    known.call.cancel();
    expect(unknown.seen).toEqual(["SERVICE_UNKNOWN"]);
    expect(known.seen).toEqual(["SERVING"]);
  });
});
