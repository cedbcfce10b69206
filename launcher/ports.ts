// Where `npm start` listens, or starts a server: the topology's ports for the services, these for
// the rest, all moved by SHOPMESH_PORT_OFFSET (a second checkout beside the first, tests).
import { gateway, serviceNames, topology, type ServiceName } from "../mesh/topology.js";

/** The highest offset that keeps every port a port. */
export const MAX_PORT_OFFSET = 65_535 - Math.max(...serviceNames.map((n) => topology[n].grpcPort));

export function launcherPorts(offset: number) {
  return {
    gateway: gateway.httpPort + offset,
    gatewayMetrics: gateway.metricsPort + offset,
    dashboard: 8081 + offset,
    nats: 4222 + offset,
    redis: 6379 + offset,
    postgres: 5433 + offset,
    grpc: (name: ServiceName) => topology[name].grpcPort + offset,
    metrics: (name: ServiceName) => topology[name].metricsPort + offset,
  };
}

/** Every port of the plan, as numbers (to check that they are free, or freed). */
export function allLauncherPorts(offset: number): number[] {
  const { grpc, metrics, ...fixed } = launcherPorts(offset);
  return [...Object.values(fixed), ...serviceNames.flatMap((n) => [grpc(n), metrics(n)])];
}
