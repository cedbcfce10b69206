// What the dev and prod overlays change in the base.
//   dev:  one replica of everything and smaller requests, one PostgreSQL instance, one NATS
//         server (so one copy of each stream), the CLI's `client` identity (a certificate, and a
//         caller every sidecar accepts).
//   prod: the base as it is (autoscalers, disruption budgets), NetworkPolicies, the gateway behind
//         a LoadBalancer. Images by digest: a release pipeline sets them (see kubernetes.ts).
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import type { IHorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IService } from "kubernetes-models/v1/Service";
import { gateway, sidecar, topology, type Resources, type ServiceName } from "../../mesh/topology.js";
import { envoyConfig } from "./envoy.js";
import { yamlFile } from "./files.js";
import { identityCertificate } from "./k8s-certificates.js";
import { contentHash, edgeServices, POSTGRES_CLUSTER, resources, type Workload } from "./k8s-common.js";
import { natsDevValues, streamReplicas } from "./k8s-nats.js";
import type { CnpgCluster } from "./k8s-postgres.js";
import { APP_CONTAINER, ENVOY_CONFIG_FILE, envoyConfigMap, ENVOY_CONTAINER, ENVOY_HASH_ANNOTATION } from "./k8s-workloads.js";

type DeepPartial<T> = T extends readonly (infer U)[] ? DeepPartial<U>[] : T extends object ? { [K in keyof T]?: DeepPartial<T[K]> } : T;

/** The identity of the CLI and tests (`npm run dlq`, grpcurl through a port-forward): dev only. */
export const DEV_CALLER = "client";

/** A quarter of the CPU and half the memory requested; the same memory limit. */
export function devResources(r: Resources): Resources {
  const scale = (quantity: string, divisor: number, unit: "m" | "Mi") => {
    if (!quantity.endsWith(unit)) throw new Error(`devResources: ${quantity} is not in ${unit}`);
    return `${Math.max(1, Math.round(Number(quantity.slice(0, -unit.length)) / divisor))}${unit}`;
  };
  return { cpu: scale(r.cpu, 4, "m"), memory: scale(r.memory, 2, "Mi"), memoryLimit: r.memoryLimit };
}

export const devEnvoyConfigText = (name: ServiceName) => yamlFile(envoyConfig(name, edgeServices(), [DEV_CALLER]));

function devDeploymentPatch(name: Workload): DeepPartial<IDeployment> {
  const app = name === "gateway" ? gateway.resources : topology[name].resources;
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name },
    spec: {
      replicas: 1,
      template: {
        ...(name === "gateway" ? {} : { metadata: { annotations: { [ENVOY_HASH_ANNOTATION]: contentHash(devEnvoyConfigText(name)) } } }),
        spec: {
          initContainers: [{ name: ENVOY_CONTAINER, resources: resources(devResources(sidecar.resources)) }],
          containers: [{
            name: APP_CONTAINER,
            resources: resources(devResources(app)),
            // Merged by name into the base's env: as many stream copies as the dev NATS has servers.
            ...(name === "gateway" ? {} : { env: [{ name: "EVENTS_REPLICAS", value: String(streamReplicas(natsDevValues)) }] }),
          }],
        },
      },
    },
  };
}

/** Kept, pinned to one replica: a dev cluster often has no metrics server, and one replica is enough. */
const oneReplicaAutoscaler = (name: Workload): DeepPartial<IHorizontalPodAutoscaler> =>
  ({ apiVersion: "autoscaling/v2", kind: "HorizontalPodAutoscaler", metadata: { name }, spec: { minReplicas: 1, maxReplicas: 1 } });

const devEnvoyConfigMap = (name: ServiceName): DeepPartial<IConfigMap> =>
  ({ apiVersion: "v1", kind: "ConfigMap", metadata: { name: envoyConfigMap(name) }, data: { [ENVOY_CONFIG_FILE]: devEnvoyConfigText(name) } });

/** The dev overlay's patches of one workload. */
export function devWorkloadPatches(name: Workload): object[] {
  return [devDeploymentPatch(name), oneReplicaAutoscaler(name), ...(name === "gateway" ? [] : [devEnvoyConfigMap(name)])];
}

export const devPostgresPatch: DeepPartial<CnpgCluster> = {
  apiVersion: "postgresql.cnpg.io/v1",
  kind: "Cluster",
  metadata: { name: POSTGRES_CLUSTER },
  spec: { instances: 1, storage: { size: "1Gi" }, resources: { requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "1Gi" } } },
};

export const devClientCertificate = () => identityCertificate(DEV_CALLER);

export const prodGatewayServicePatch: DeepPartial<IService> = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "gateway" },
  // Keep the client's address (X-Forwarded-For is not set by an L4 load balancer): rate limits key on it.
  spec: { type: "LoadBalancer", externalTrafficPolicy: "Local" },
};
