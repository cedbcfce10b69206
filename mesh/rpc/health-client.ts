// Asks a service's grpc.health.v1 endpoint how it is, over mTLS or through the local sidecar
// (launcher, the gateway's readiness, tests, the image's health check). Also the protocol's wire
// format, which serve.ts answers in.
import * as grpc from "@grpc/grpc-js";
import { BinaryReader, BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import type { TlsFiles } from "../certs.js";
import { channelCredentials, checkUpstreamAddresses, type TransportMode } from "./transport.js";

// grpc.health.v1 without grpc-health-check: that package parses its health.proto with protobufjs
// as it loads, which cost each process ~1.6 MiB of heap and 3-6 MiB of RSS (measured on a service
// process; reflection, which needs protobufjs too, is loaded only when asked: serve.ts). Every
// message has one field, number 1: HealthCheckRequest.service (string; HealthListRequest has no
// field), HealthCheckResponse.status (enum ServingStatus below), HealthListResponse.statuses
// (map<string, HealthCheckResponse>: entries of key 1, value 2).
export const servingStatuses = ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"] as const;
export type ServingStatus = (typeof servingStatuses)[number];
export interface HealthRequest { service: string }
export interface HealthResponse { status: ServingStatus }
export interface HealthListResponse { statuses: Record<string, HealthResponse> }

/** Field 1 of a message, read by `read` (unknown fields skipped), or undefined. */
function field1<T>(bytes: Uint8Array, type: WireType, read: (reader: BinaryReader) => T): T | undefined {
  const reader = new BinaryReader(bytes);
  let value: T | undefined;
  while (reader.pos < reader.len) {
    const [no, wire] = reader.tag();
    if (no === 1 && wire === type) value = read(reader);
    else reader.skip(wire, no);
  }
  return value;
}
const bytes = (writer: BinaryWriter) => Buffer.from(writer.finish());
const encodeRequest = ({ service }: HealthRequest) => bytes(service ? new BinaryWriter().tag(1, WireType.LengthDelimited).string(service) : new BinaryWriter());
const decodeRequest = (b: Uint8Array): HealthRequest => ({ service: field1(b, WireType.LengthDelimited, (r) => r.string()) ?? "" });
const writeStatus = (w: BinaryWriter, status: ServingStatus) => (status === "UNKNOWN" ? w : w.tag(1, WireType.Varint).int32(servingStatuses.indexOf(status)));
const encodeResponse = ({ status }: HealthResponse) => bytes(writeStatus(new BinaryWriter(), status));
const decodeResponse = (b: Uint8Array): HealthResponse => ({ status: servingStatuses[field1(b, WireType.Varint, (r) => r.int32()) ?? 0] ?? "UNKNOWN" });
const encodeList = ({ statuses }: HealthListResponse) => {
  const w = new BinaryWriter();
  for (const [name, { status }] of Object.entries(statuses)) {
    w.tag(1, WireType.LengthDelimited).fork(); // one map entry
    w.tag(1, WireType.LengthDelimited).string(name);
    writeStatus(w.tag(2, WireType.LengthDelimited).fork(), status).join();
    w.join();
  }
  return bytes(w);
};

const method = <Res>(name: string, responseStream: boolean, encode: (res: Res) => Buffer, decode?: (b: Uint8Array) => Res) => ({
  path: `/grpc.health.v1.Health/${name}`,
  requestStream: false,
  responseStream,
  requestSerialize: encodeRequest,
  requestDeserialize: decodeRequest,
  responseSerialize: encode,
  // List is only served here, never asked.
  responseDeserialize: decode ?? ((): Res => { throw new Error(`${name} responses are not decoded here`); }),
});

/** grpc.health.v1.Health as grpc-js takes it, keyed as grpc-health-check's (check, watch, list). */
export const healthDefinition = {
  check: method("Check", false, encodeResponse, decodeResponse),
  watch: method("Watch", true, encodeResponse, decodeResponse),
  list: method("List", false, encodeList),
} satisfies grpc.ServiceDefinition;

const Health = grpc.makeClientConstructor(healthDefinition, "Health");

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
    check(req: HealthRequest, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res: HealthResponse) => void): void;
    watch(req: HealthRequest): grpc.ClientReadableStream<HealthResponse>;
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
