// What the dev and prod overlays change in the base.
//   dev:  one replica of everything and smaller requests, one PostgreSQL instance,
//         the CLI's `client` identity (a certificate, and a caller every sidecar accepts), and the
//         role passwords as dev-only secrets.
//   prod: the base as it is (autoscalers, disruption budgets), NetworkPolicies, the gateway behind
//         a LoadBalancer. Images by digest: a release pipeline sets them (see kubernetes.ts).
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import type { IHorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { IService } from "kubernetes-models/v1/Service";
import { Secret } from "kubernetes-models/v1/Secret";
import { gateway, serviceNames, sidecar, topology, type Resources, type ServiceName } from "../../mesh/topology.js";
import { envoyConfig } from "./envoy.js";
import { yamlFile } from "./files.js";
import { identityCertificate } from "./k8s-certificates.js";
import { contentHash, edgeServices, meta, POSTGRES_CLUSTER, postgresSecret, resources, type Workload } from "./k8s-common.js";
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
          containers: [{ name: APP_CONTAINER, resources: resources(devResources(app)) }],
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

/**
 * Dev-only role passwords, in the repository on purpose: the dev overlay then applies as it is.
 * In prod these secrets are created apart (see kubernetes.ts), never committed.
 */
export function devPostgresSecrets(): Secret[] {
  return serviceNames.map((name) => new Secret({
    metadata: { ...meta(postgresSecret(name), "database"), labels: { ...meta(postgresSecret(name), "database").labels, "cnpg.io/reload": "true" } },
    type: "kubernetes.io/basic-auth",
    stringData: { username: name, password: `dev-only-${name}` },
  }));
}

export const devClientCertificate = () => identityCertificate(DEV_CALLER);

export const prodGatewayServicePatch: DeepPartial<IService> = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "gateway" },
  // Keep the client's address (X-Forwarded-For is not set by an L4 load balancer): rate limits key on it.
  spec: { type: "LoadBalancer", externalTrafficPolicy: "Local" },
};
