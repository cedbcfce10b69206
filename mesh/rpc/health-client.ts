// Asks a service's grpc.health.v1 endpoint how it is, over mTLS or through the local sidecar
// (launcher, the gateway's readiness, tests, the image's health check).
import * as grpc from "@grpc/grpc-js";
import { service as healthService } from "grpc-health-check";
import type { TlsFiles } from "../certs.js";
import { channelCredentials, checkUpstreamAddresses, type TransportMode } from "./transport.js";

const Health = grpc.makeClientConstructor(healthService, "Health");

export interface HealthClient {
  /** "SERVING", "NOT_SERVING" or "UNKNOWN"; rejects when the service cannot be reached. */
  check(service?: string, timeoutMs?: number): Promise<string>;
  /** Status changes as the server pushes them (grpc.health.v1 Watch). */
  watch(service?: string): grpc.ClientReadableStream<{ status: string }>;
  close(): void;
}

export function healthClient(address: string, upstream: string, tls: TlsFiles, transport: TransportMode = "mtls"): HealthClient {
  checkUpstreamAddresses(transport, [address]);
  const credentials = channelCredentials(transport, tls, upstream);
  // Reconnects within half a second, as the mesh's clients do: grpc-js's default back-off grows to
  // minutes after early refusals, which kept the gateway's /readyz failing long after its upstreams
  // had started.
  const options = { "grpc.ssl_target_name_override": upstream, "grpc.initial_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 500 };
  const client = new Health(address, credentials, options) as unknown as {
    check(req: object, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: { status: string }) => void): void;
    watch(req: object): grpc.ClientReadableStream<{ status: string }>;
    close(): void;
  };
  return {
    check: (service = "", timeoutMs = 2_000) =>
      new Promise((resolve, reject) =>
        client.check({ service }, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(res.status))),
      ),
    watch: (service = "") => client.watch({ service }),
    close: () => client.close(),
  };
}
