// PostgreSQL through CloudNativePG: one Cluster, a role and a Database per service, and
// max_connections sized from the topology: every replica a service may scale to holds up to a
// pool of connections.
//
// No passwords: a service logs in with the certificate it already has (cert-manager's, from the
// mesh CA, common name = its name = its role). The cluster's client CA is the mesh CA, pg_hba lets
// each role into its own database by certificate only and turns it away everywhere else (before
// CloudNativePG's own last rule, which would take a password), the roles have no password, and the
// apps' DATABASE_URL names their certificate files. The server's certificate comes from the mesh CA
// too; the apps verify it and its name (sslmode=verify-full) with the ca.crt they mount.
//
// CloudNativePG has no TypeScript models: the interfaces below type the fields used here (so tsc
// rejects a misspelt one), named as in its CRDs (postgresql.cnpg.io/v1).
import { images } from "./images.js";
import type { IObjectMeta } from "@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta";
import { POOL_SIZE } from "../../mesh/data/db.js";
import type { IResourceRequirements } from "kubernetes-models/v1/ResourceRequirements";
import { serviceNames, topology, type ServiceName } from "../../mesh/topology.js";
import { postgresReplicationIdentity, postgresServerIdentity } from "./k8s-certificates.js";
import { meta, mounts, POSTGRES_CLUSTER, POSTGRES_PORT, tlsKeys, tlsSecret } from "./k8s-common.js";

export interface CnpgRole {
  name: string;
  ensure: "present" | "absent";
  login: boolean;
  connectionLimit: number;
  /** Sets the role's password to NULL (a password left from an earlier setup is removed). */
  disablePassword: boolean;
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
    postgresql: { parameters: Record<string, string>; pg_hba: string[] };
    certificates: { serverTLSSecret: string; serverCASecret: string; clientCASecret: string; replicationTLSSecret: string };
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

/**
 * The pg_hba rules (first match wins): each service's role into its own database over TLS with a
 * client certificate whose common name is the role, and nowhere else by any method. CloudNativePG
 * puts its fixed rules (local access, streaming_replica by certificate) before these and
 * `host all all all scram-sha-256` after them.
 */
export const postgresHbaRules = (): string[] =>
  serviceNames.flatMap((name) => [`hostssl ${name} ${name} all cert`, `host all ${name} all reject`]);

/** Where a service reaches PostgreSQL, and where its certificate files are (the app's CERTS_DIR). */
export interface DatabaseLocation {
  host: string;
  port: number;
  certsDir: string;
}
const inCluster: DatabaseLocation = { host: `${POSTGRES_CLUSTER}-rw`, port: POSTGRES_PORT, certsDir: mounts.appCerts };

/**
 * A service's DATABASE_URL: no password, its certificate and key as the client's (node-postgres
 * reads the files for each new connection), the server verified against the mesh CA, name included.
 */
export function databaseUrl(service: ServiceName, at: DatabaseLocation = inCluster): string {
  const file = (name: string) => `${at.certsDir}/${name}`;
  return `postgres://${service}@${at.host}:${at.port}/${service}?sslmode=verify-full&sslcert=${file(tlsKeys.cert)}&sslkey=${file(tlsKeys.key)}&sslrootcert=${file(tlsKeys.ca)}`;
}

export function postgresCluster(): CnpgCluster {
  const budget = connectionBudget();
  return {
    apiVersion: "postgresql.cnpg.io/v1",
    kind: "Cluster",
    metadata: meta(POSTGRES_CLUSTER, "database"),
    spec: {
      instances: POSTGRES_INSTANCES,
      imageName: images.cnpgPostgres,
      primaryUpdateStrategy: "unsupervised",
      enableSuperuserAccess: false,
      storage: { size: "20Gi" },
      resources: { requests: { cpu: "500m", memory: "1Gi" }, limits: { memory: "2Gi" } },
      affinity: { enablePodAntiAffinity: true, topologyKey: "kubernetes.io/hostname" },
      postgresql: { parameters: { max_connections: String(budget.maxConnections) }, pg_hba: postgresHbaRules() },
      certificates: {
        // The server's certificate from the mesh CA: apps verify it (sslmode=verify-full) with their ca.crt.
        serverTLSSecret: tlsSecret(postgresServerIdentity),
        serverCASecret: tlsSecret(postgresServerIdentity),
        // The client CA is the mesh CA, read from the ca.crt of a certificate it issued: the instances
        // may read the secret named here, and the CA's own secret holds its private key.
        clientCASecret: tlsSecret(postgresReplicationIdentity),
        replicationTLSSecret: tlsSecret(postgresReplicationIdentity),
      },
      managed: {
        roles: serviceNames.map((name) => ({
          name,
          ensure: "present",
          login: true,
          // One service cannot take the connections the others are budgeted.
          connectionLimit: budget.perService[name],
          disablePassword: true,
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
