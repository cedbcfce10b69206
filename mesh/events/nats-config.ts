// How NATS is locked, generated from the topology: the nats-server configuration, what each mesh
// identity may do there, and how a mesh process connects.
//
// nats-server speaks TLS only and requires a client certificate from the mesh CA
// (`verify_and_map`): it maps the certificate to a NATS user by its SAN — DNS names first, then
// the URI — so each service's user is its SPIFFE id, spiffe://shopmesh/<name> (no user is named
// after a DNS name). A certificate of the CA that maps to no user is refused.
//
// A service may publish only its own events, dead-letter only its own consumers' messages, use
// only the JetStream API calls its own stream and consumers need, and receive only on its own
// inbox prefix, so it cannot read another service's replies, and the events that invalidate its
// caches (topology's cacheInvalidatedBy), if any. The gateway may only subscribe to the
// events that invalidate its cache (topology's gateway.cacheInvalidatedBy) and publish nothing.
// The "client" identity (CLI tools, `npm run dlq`, tests) is the operator: full rights.
import type { ConnectionOptions } from "nats";
import type { TlsFiles } from "../certs.js";
import { spiffeId } from "../certs.js";
import { DLQ_STREAM, streamName } from "./events.js";
import { gateway, ownerOfSubject, serviceNames, topology, type ServiceName, type ServiceSpec } from "../topology.js";

/** The identity with every right on NATS: operators, their tools and tests. */
export const natsOperator = "client";

/** Replies to a mesh identity's requests arrive under this prefix, which only it may subscribe to. */
export const inboxPrefix = (identity: string) => `_INBOX_${identity}`;

/** The durable consumer of a service's consumer `name`. */
export const durableName = (service: string, name: string) => `${service}-${name}`;

export interface NatsPermissions {
  publish: string[];
  subscribe: string[];
}

/** What `service` may publish and subscribe to, from what the topology says it owns and consumes. */
export function natsPermissions(service: ServiceName): NatsPermissions {
  const spec: ServiceSpec = topology[service];
  const api = "$JS.API";
  const publish = [`${api}.INFO`, ...spec.eventSubjects];
  const streamCalls = (stream: string) => ["INFO", "CREATE", "UPDATE"].map((call) => `${api}.STREAM.${call}.${stream}`);
  if (spec.eventSubjects.length) publish.push(...streamCalls(streamName(service)));
  const consumers = Object.entries(spec.consumes);
  // A consuming service creates the shared dead-letter stream if it is missing (and keeps its limits).
  if (consumers.length) publish.push(...streamCalls(DLQ_STREAM));
  for (const [name, subject] of consumers) {
    const owner = ownerOfSubject(subject);
    if (!owner) throw new Error(`topology: ${service} consumes ${subject}, which no service publishes`);
    const stream = streamName(owner);
    const durable = durableName(service, name);
    publish.push(
      `${api}.CONSUMER.INFO.${stream}.${durable}`,
      `${api}.CONSUMER.CREATE.${stream}.${durable}.${subject}`, // create and update, with its one filter
      `${api}.CONSUMER.MSG.NEXT.${stream}.${durable}`,
      `$JS.ACK.${stream}.${durable}.>`, // ack, nak, term, in-progress
      `dlq.${durable}.${subject}`,
    );
  }
  return { publish, subscribe: [`${inboxPrefix(service)}.>`, ...invalidatingSubjects(service, spec.cacheInvalidatedBy ?? [])] };
}

/** The subjects that invalidate `whose` cache, each checked to be some service's events. */
function invalidatingSubjects(whose: string, subjects: readonly string[]): string[] {
  for (const subject of subjects) {
    if (!ownerOfSubject(subject)) throw new Error(`topology: ${whose}'s cache is invalidated by ${subject}, which no service publishes`);
  }
  return [...subjects];
}

/** The gateway's NATS user: it subscribes (core NATS) to its cache's invalidating events, and publishes nothing. */
export function gatewayNatsPermissions(): { publish: { deny: string[] }; subscribe: { allow: string[] } } {
  // An empty allow list would allow everything: deny publishing outright.
  return { publish: { deny: [">"] }, subscribe: { allow: invalidatingSubjects("the gateway", gateway.cacheInvalidatedBy) } };
}

/** Options every mesh process connects with: its certificate, always, and its own inbox prefix. */
export function natsConnectOptions(identity: string, tls: TlsFiles): Partial<ConnectionOptions> {
  // Given file names, the client reads them at every reconnect: a renewed certificate (cert-manager
  // rewrites the mounted secret) is used from the next connection on, with no restart.
  const files = tls.paths && { caFile: tls.paths.ca, certFile: tls.paths.cert, keyFile: tls.paths.key };
  // noAsyncTraces: otherwise every request (each JetStream publish and fetch) captures two stack
  // traces up front, in case it times out: ~1.5 % of the services' CPU in the saga. A timeout still
  // fails with NATS's TIMEOUT error, only without the caller's frames.
  return { name: identity, tls: files ?? { ca: tls.ca, cert: tls.cert, key: tls.key }, inboxPrefix: inboxPrefix(identity), noAsyncTraces: true };
}

export interface NatsServerOptions {
  host: string;
  port: number;
  /** JetStream's store directory. */
  storeDir: string;
  /** Paths of the mesh CA (trusted for clients) and of nats-server's own certificate and key. */
  tlsFiles: { ca: string; cert: string; key: string };
  /** Largest message accepted; events are small protobuf messages. */
  maxPayloadBytes?: number;
}

/** Largest message NATS accepts by default: the contracts bound every event to tens of KiB. */
export const DEFAULT_MAX_PAYLOAD = 256 * 1024;

/** The nats-server configuration file (JSON, which nats-server's configuration format accepts). */
export function natsServerConfig(opts: NatsServerOptions): string {
  const users = [
    { user: spiffeId(natsOperator) }, // no permissions block: every right
    ...serviceNames.map((name) => {
      const { publish, subscribe } = natsPermissions(name);
      return { user: spiffeId(name), permissions: { publish: { allow: publish }, subscribe: { allow: subscribe } } };
    }),
    { user: spiffeId(gateway.name), permissions: gatewayNatsPermissions() },
  ];
  const config = {
    host: opts.host,
    port: opts.port,
    max_payload: opts.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD,
    jetstream: { store_dir: opts.storeDir },
    tls: { ca_file: opts.tlsFiles.ca, cert_file: opts.tlsFiles.cert, key_file: opts.tlsFiles.key, verify_and_map: true, timeout: 5 },
    authorization: { users },
  };
  return `# Generated from the ShopMesh topology (mesh/events/nats-config.ts); do not edit.\n${JSON.stringify(config, null, 2)}\n`;
}
