// The public services behind the gateway, one mesh client each (deadline, retries for idempotent
// calls, circuit breaker, round robin, mTLS as "gateway" or through its sidecar). Which of their RPCs the edge serves,
// and to whom, the contracts say (see access.ts).
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type MeshClient, type ResiliencePolicy } from "../mesh/rpc/client.js";
import type { TlsFiles } from "../mesh/certs.js";
import type { TransportMode } from "../mesh/rpc/transport.js";
import { serviceNames, topology, type ServiceName } from "../mesh/topology.js";
import type { Registry } from "prom-client";
import { servedAtEdge } from "./access.js";

/** The services whose contracts expose at least one RPC at the edge, from the topology. */
export const publicServices: readonly [DescService, ServiceName][] = serviceNames
  .filter((name) => topology[name].contract.methods.some(servedAtEdge))
  .map((name) => [topology[name].contract, name]);

/** The mesh name of a public service ("catalog"), for messages that say which service failed. */
export const serviceName = (service: DescService): ServiceName => publicServices.find(([s]) => s === service)![1];

export type Upstreams = Map<DescService, MeshClient<DescService>>;

export interface UpstreamOptions {
  tls: TlsFiles;
  transport: TransportMode;
  addresses: (name: ServiceName) => string[];
  /** Overrides of each service's own policy (topology.ts), e.g. the gateway's deadline. */
  policy: Partial<ResiliencePolicy>;
  metrics: Registry;
}

export function connectUpstreams({ tls, transport, addresses, policy, metrics }: UpstreamOptions): Upstreams {
  return new Map(publicServices.map(([service, name]) => [
    service,
    createClient(service, { upstream: name, addresses: addresses(name), tls, transport, policy: { ...topology[name].resilience, ...policy }, metrics }),
  ]));
}
