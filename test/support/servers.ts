// Servers for runtime tests: real serve() with real mTLS (or behind a test sidecar) on a free port, with handlers written in
// the test (the runtime is under test here, not a service's logic).
import type { DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Registry } from "prom-client";
import { serve, type RunningServer } from "../../mesh/rpc/serve.js";
import { createClient, type ClientOptions, type MeshClient } from "../../mesh/rpc/client.js";
import { createLogger } from "../../mesh/telemetry.js";
import type { TestPki } from "./pki.js";
import type { TransportMode } from "../../mesh/rpc/transport.js";

export const silentLogger = createLogger("test", "silent");

export interface StubServer extends RunningServer {
  address: string;
  metrics: Registry;
}

export async function startServer<S extends DescService>(
  pki: TestPki,
  identity: string,
  service: S,
  impl: Partial<ServiceImpl<S>>,
  opts: { ready?: () => Promise<boolean>; readyIntervalMs?: number; drainTimeoutMs?: number; port?: number; transport?: TransportMode } = {},
): Promise<StubServer> {
  const full = Object.fromEntries(
    service.methods.map((m) => [m.localName, (impl as Record<string, unknown>)[m.localName] ?? (() => { throw new ConnectError("not in this test", Code.Unimplemented); })]),
  ) as ServiceImpl<S>;
  const metrics = new Registry();
  const server = await serve({ service, impl: full, tls: await pki.tls(identity), logger: silentLogger, metrics, host: "127.0.0.1", port: opts.port ?? 0, ...opts });
  return { ...server, address: `127.0.0.1:${server.port}`, metrics };
}

export async function clientFor<S extends DescService>(
  pki: TestPki,
  service: S,
  upstream: string,
  addresses: string[],
  opts: Partial<ClientOptions> & { as?: string } = {},
): Promise<MeshClient<S>> {
  return createClient(service, { upstream, addresses, tls: await pki.tls(opts.as ?? "client"), ...opts });
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The ConnectError a promise rejects with (fails the test if it resolves). */
export async function rejection(promise: Promise<unknown>): Promise<ConnectError> {
  try {
    await promise;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected the call to fail, and it succeeded");
}
