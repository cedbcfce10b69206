// PostgreSQL through CloudNativePG: one Cluster, a role (with its password from a secret) and a
// Database per service, TLS with a certificate of the mesh CA (the apps verify it with the ca.crt
// they already mount), and max_connections sized from the topology: every replica a service may
// scale to holds up to a pool of connections.
//
// CloudNativePG has no TypeScript models: the interfaces below type the fields used here (so tsc
// rejects a misspelt one), named as in its CRDs (postgresql.cnpg.io/v1).
import type { IObjectMeta } from "@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta";
import { POOL_SIZE } from "../../mesh/data/db.js";
import type { IResourceRequirements } from "kubernetes-models/v1/ResourceRequirements";
import { serviceNames, topology, type ServiceName } from "../../mesh/topology.js";
import { postgresServerIdentity } from "./k8s-certificates.js";
import { images, meta, POSTGRES_CLUSTER, postgresSecret, tlsSecret } from "./k8s-common.js";

export interface CnpgRole {
  name: string;
  ensure: "present" | "absent";
  login: boolean;
  connectionLimit: number;
  passwordSecret: { name: string };
}

export interface CnpgCluster {
  apiVersion: "postgresql.cnpg.io/v1";
  kind: "Cluster";
  metadata: IObjectMeta;
  spec: {
    instances: number;
    imageName: string;
    primaryUpdateStrategy: "unsupervised" | "supervised";
    enableSuperuserAccess: boolean;
    storage: { size: string; storageClass?: string };
    resources: IResourceRequirements;
    affinity: { enablePodAntiAffinity: boolean; topologyKey: string };
    postgresql: { parameters: Record<string, string> };
    certificates: { serverTLSSecret: string; serverCASecret: string };
    managed: { roles: CnpgRole[] };
  };
}

export interface CnpgDatabase {
  apiVersion: "postgresql.cnpg.io/v1";
  kind: "Database";
  metadata: IObjectMeta;
  spec: { name: string; owner: string; cluster: { name: string }; ensure: "present" | "absent"; databaseReclaimPolicy: "retain" | "delete" };
}

/** Beyond the apps: superuser_reserved_connections (3), the operator's instance manager and an operator's psql. */
export const RESERVED_CONNECTIONS = 3 + 10;

export interface ConnectionBudget {
  /** Each service's most connections: maxReplicas × POOL_SIZE (also its role's connection limit). */
  perService: Record<ServiceName, number>;
  apps: number;
  maxConnections: number;
}

export function connectionBudget(): ConnectionBudget {
  const perService = Object.fromEntries(serviceNames.map((name) => [name, topology[name].scaling.maxReplicas * POOL_SIZE])) as Record<ServiceName, number>;
  const apps = Object.values(perService).reduce((sum, n) => sum + n, 0);
  return { perService, apps, maxConnections: apps + RESERVED_CONNECTIONS };
}

export const POSTGRES_INSTANCES = 3;

export function postgresCluster(): CnpgCluster {
  const budget = connectionBudget();
  return {
    apiVersion: "postgresql.cnpg.io/v1",
    kind: "Cluster",
    metadata: meta(POSTGRES_CLUSTER, "database"),
    spec: {
      instances: POSTGRES_INSTANCES,
      imageName: images.postgres,
      primaryUpdateStrategy: "unsupervised",
      enableSuperuserAccess: false,
      storage: { size: "20Gi" },
      resources: { requests: { cpu: "500m", memory: "1Gi" }, limits: { memory: "2Gi" } },
      affinity: { enablePodAntiAffinity: true, topologyKey: "kubernetes.io/hostname" },
      postgresql: { parameters: { max_connections: String(budget.maxConnections) } },
      // The server's certificate from the mesh CA: apps verify it (sslmode=verify-full) with their ca.crt.
      certificates: { serverTLSSecret: tlsSecret(postgresServerIdentity), serverCASecret: tlsSecret(postgresServerIdentity) },
      managed: {
        roles: serviceNames.map((name) => ({
          name,
          ensure: "present",
          login: true,
          // One service cannot take the connections the others are budgeted.
          connectionLimit: budget.perService[name],
          passwordSecret: { name: postgresSecret(name) },
        })),
      },
    },
  };
}

export function postgresDatabases(): CnpgDatabase[] {
  return serviceNames.map((name) => ({
    apiVersion: "postgresql.cnpg.io/v1",
    kind: "Database",
    metadata: meta(name, "database"),
    spec: { name, owner: name, cluster: { name: POSTGRES_CLUSTER }, ensure: "present", databaseReclaimPolicy: "retain" },
  }));
}
