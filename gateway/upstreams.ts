// The public services behind the gateway, one mesh client each (deadline, retries for idempotent
// calls, circuit breaker, round robin, mTLS as "gateway"). Which of their RPCs the edge serves,
// and to whom, the contracts say (see access.ts).
import type { DescService } from "@bufbuild/protobuf";
import { createClient, type MeshClient, type ResiliencePolicy } from "../mesh/rpc/client.js";
import type { TlsFiles } from "../mesh/certs.js";
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

export function connectUpstreams(
  tls: TlsFiles,
  addresses: (name: ServiceName) => string[],
  policy: Partial<ResiliencePolicy>,
  metrics: Registry,
): Upstreams {
  return new Map(publicServices.map(([service, name]) => [service, createClient(service, { upstream: name, addresses: addresses(name), tls, policy, metrics })]));
}
