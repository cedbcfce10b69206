// The prod overlay's NetworkPolicies: nothing moves in the namespace unless a flow below names it,
// and every flow comes from the topology: a service's callers reach its grpcPort (its Envoy), the
// services reach NATS and PostgreSQL, the gateway reaches NATS (its cache's invalidations), the
// catalog and the gateway reach Redis, anyone reaches the
// gateway's HTTP port, Prometheus scrapes the metrics ports, the NATS servers route to each other,
// the CloudNativePG operator reaches its instances. A flow is allowed on both ends: the source's
// egress and the destination's ingress.
import { NetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import type { INetworkPolicyPeer } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicyPeer";
import type { INetworkPolicyPort } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicyPort";
import { gateway, serviceNames, sidecar, topology } from "../../mesh/topology.js";
import { callersOf } from "./envoy.js";
import {
  CNPG_OPERATOR_NAMESPACE, edgeServices, meta, MONITORING_NAMESPACE, NATS_CLIENT_PORT, NATS_CLUSTER_PORT, NATS_MONITOR_PORT, natsChart,
  natsPodLabels, POSTGRES_CLUSTER, POSTGRES_PORT, postgresPodLabels, REDIS, REDIS_PORT, redisClients, selector, type Workload,
} from "./k8s-common.js";

/** A party to a flow: pods of ours (by a policy name and their labels), another namespace, or anyone. */
export type Party =
  | { kind: "pods"; name: string; labels: Record<string, string> }
  | { kind: "namespace"; namespace: string }
  | { kind: "anywhere" };

export interface Flow {
  from: Party;
  to: Party;
  port: number;
}

const pods = (name: string, labels: Record<string, string> = selector(name)): Party => ({ kind: "pods", name, labels });
const workload = (name: Workload) => pods(name);
const nats = pods(natsChart.release, natsPodLabels);
const postgres = pods(POSTGRES_CLUSTER, postgresPodLabels);
const redis = pods(REDIS);
const monitoring: Party = { kind: "namespace", namespace: MONITORING_NAMESPACE };
const cnpgOperator: Party = { kind: "namespace", namespace: CNPG_OPERATOR_NAMESPACE };
const anywhere: Party = { kind: "anywhere" };

/** CloudNativePG: the instance manager's status port (the operator asks it) and its Prometheus exporter. */
export const CNPG_STATUS_PORT = 8000;
export const CNPG_METRICS_PORT = 9187;
/** The Kubernetes API server (as a Service port and as its usual endpoint port): CloudNativePG's instances call it. */
const API_SERVER_PORTS = [443, 6443];

/** Every flow the mesh needs, derived from the topology. */
export function meshFlows(): Flow[] {
  const edge = edgeServices();
  const flows: Flow[] = [];
  for (const name of serviceNames) {
    for (const caller of callersOf(name, edge)) flows.push({ from: workload(caller as Workload), to: workload(name), port: topology[name].grpcPort });
    // Every service runs the outbox and its consumers on NATS, and keeps its state in PostgreSQL.
    flows.push({ from: workload(name), to: nats, port: NATS_CLIENT_PORT }, { from: workload(name), to: postgres, port: POSTGRES_PORT });
  }
  flows.push({ from: workload("gateway"), to: nats, port: NATS_CLIENT_PORT }); // its cache's invalidations
  for (const client of redisClients) flows.push({ from: workload(client), to: redis, port: REDIS_PORT });
  flows.push({ from: anywhere, to: workload("gateway"), port: gateway.httpPort });
  for (const name of [...serviceNames, "gateway" as const]) {
    const metricsPort = name === "gateway" ? gateway.metricsPort : topology[name].metricsPort;
    flows.push({ from: monitoring, to: workload(name), port: metricsPort }, { from: monitoring, to: workload(name), port: sidecar.opsPort });
  }
  flows.push(
    { from: nats, to: nats, port: NATS_CLUSTER_PORT },
    { from: monitoring, to: nats, port: NATS_MONITOR_PORT },
    { from: postgres, to: postgres, port: POSTGRES_PORT }, // streaming replication
    { from: postgres, to: postgres, port: CNPG_STATUS_PORT },
    { from: cnpgOperator, to: postgres, port: CNPG_STATUS_PORT },
    { from: cnpgOperator, to: postgres, port: POSTGRES_PORT },
    { from: monitoring, to: postgres, port: CNPG_METRICS_PORT },
    ...API_SERVER_PORTS.map((port) => ({ from: postgres, to: anywhere, port })),
  );
  return flows;
}

function peer(party: Party): INetworkPolicyPeer[] {
  switch (party.kind) {
    case "pods": return [{ podSelector: { matchLabels: party.labels } }];
    case "namespace": return [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": party.namespace } } }];
    case "anywhere": return [];
  }
}

const partyKey = (party: Party) => JSON.stringify(party);
const tcp = (port: number): INetworkPolicyPort => ({ protocol: "TCP", port });

/** Flows grouped by their other end: one rule per peer, with every port it may use. */
function rules(flows: Flow[], other: (flow: Flow) => Party) {
  const byPeer = new Map<string, { party: Party; ports: number[] }>();
  for (const flow of flows) {
    const party = other(flow);
    const entry = byPeer.get(partyKey(party)) ?? { party, ports: [] };
    if (!entry.ports.includes(flow.port)) entry.ports.push(flow.port);
    byPeer.set(partyKey(party), entry);
  }
  return [...byPeer.values()].map(({ party, ports }) => ({ peers: peer(party), ports: ports.map(tcp) }));
}

const DNS_PORTS: INetworkPolicyPort[] = [{ protocol: "UDP", port: 53 }, { protocol: "TCP", port: 53 }];

export function networkPolicies(flows: Flow[] = meshFlows()): NetworkPolicy[] {
  const parties = new Map<string, Extract<Party, { kind: "pods" }>>();
  for (const { from, to } of flows) for (const party of [from, to]) if (party.kind === "pods") parties.set(party.name, party);
  const isParty = (party: Party, name: string) => party.kind === "pods" && party.name === name;
  return [
    new NetworkPolicy({
      metadata: meta("default-deny", "network"),
      spec: { podSelector: {}, policyTypes: ["Ingress", "Egress"] },
    }),
    new NetworkPolicy({
      metadata: meta("allow-dns", "network"),
      spec: {
        podSelector: {},
        policyTypes: ["Egress"],
        egress: [{ to: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "kube-system" } }, podSelector: { matchLabels: { "k8s-app": "kube-dns" } } }], ports: DNS_PORTS }],
      },
    }),
    ...[...parties.values()].map((party) => {
      const ingress = rules(flows.filter((flow) => isParty(flow.to, party.name)), (flow) => flow.from).map(({ peers, ports }) => ({ ...(peers.length ? { from: peers } : {}), ports }));
      const egress = rules(flows.filter((flow) => isParty(flow.from, party.name)), (flow) => flow.to).map(({ peers, ports }) => ({ ...(peers.length ? { to: peers } : {}), ports }));
      return new NetworkPolicy({
        metadata: meta(party.name, "network"),
        spec: {
          podSelector: { matchLabels: party.labels },
          policyTypes: ["Ingress", "Egress"],
          ...(ingress.length ? { ingress } : {}),
          ...(egress.length ? { egress } : {}),
        },
      });
    }),
  ];
}
