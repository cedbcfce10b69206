// Asks a service's grpc.health.v1 endpoint how it is, over mTLS or through the local sidecar
// (launcher, the gateway's readiness, tests, the image's health check). Also the protocol's grpc-js
// definition, which serve.ts serves.
import * as grpc from "@grpc/grpc-js";
import { Health, HealthCheckResponse_ServingStatus, type HealthCheckRequest, type HealthCheckResponse } from "../../gen/health/v1/health_pb.js";
import type { TlsFiles } from "../certs.js";
import { grpcServiceDefinition } from "./grpc-adapter.js";
import { channelCredentials, checkUpstreamAddresses, type TransportMode } from "./transport.js";

// grpc.health.v1 from protobuf-es code generated from the .proto that grpc-health-check ships
// (buf.gen.yaml), through the same adapter as every contract: the package itself parses that file
// with protobufjs as it loads, which cost each process ~1.6 MiB of heap and 3-6 MiB of RSS
// (measured on a service process), and protobufjs is otherwise loaded only for reflection (serve.ts).
export type ServingStatus = "UNKNOWN" | "SERVING" | "NOT_SERVING" | "SERVICE_UNKNOWN";
export const statusName = (status: HealthCheckResponse_ServingStatus) => HealthCheckResponse_ServingStatus[status] as ServingStatus;

/** grpc.health.v1.Health as grpc-js takes it (check, watch, list). */
export const healthDefinition = grpcServiceDefinition(Health);

const HealthClient = grpc.makeClientConstructor(healthDefinition, "Health");

export interface HealthClient {
  /** "SERVING", "NOT_SERVING" or "UNKNOWN"; rejects when the service cannot be reached. */
  check(service?: string, timeoutMs?: number): Promise<string>;
  /** Status changes as the server pushes them (grpc.health.v1 Watch; statusName() names them). */
  watch(service?: string): grpc.ClientReadableStream<HealthCheckResponse>;
  close(): void;
}

export function healthClient(address: string, upstream: string, tls: TlsFiles, transport: TransportMode = "mtls"): HealthClient {
  checkUpstreamAddresses(transport, [address]);
  const credentials = channelCredentials(transport, tls, upstream);
  // Reconnects within half a second, as the mesh's clients do: grpc-js's default back-off grows to
  // minutes after early refusals, which kept the gateway's /readyz failing long after its upstreams
  // had started.
  const options = { "grpc.ssl_target_name_override": upstream, "grpc.initial_reconnect_backoff_ms": 100, "grpc.max_reconnect_backoff_ms": 500 };
  const client = new HealthClient(address, credentials, options) as unknown as {
    check(req: Partial<HealthCheckRequest>, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: HealthCheckResponse) => void): void;
    watch(req: Partial<HealthCheckRequest>): grpc.ClientReadableStream<HealthCheckResponse>;
    close(): void;
  };
  return {
    check: (service = "", timeoutMs = 2_000) =>
      new Promise((resolve, reject) =>
        client.check({ service }, { deadline: Date.now() + timeoutMs }, (err, res) => (err ? reject(err) : resolve(statusName(res.status)))),
      ),
    watch: (service = "") => client.watch({ service }),
    close: () => client.close(),
  };
}
