// Values for the official NATS Helm chart: a 3-server cluster with JetStream on persistent
// volumes, TLS with the certificates cert-manager issues, and the authorization of
// natsServerConfig (mesh/events/nats-config.ts) as it is: each SPIFFE id a user with exactly the
// permissions the topology gives it, mapped from the client certificate (verify_and_map).
//
// The chart writes the TLS file paths itself (a secret mounted at `dir`, the CA from `tlsCA`); the
// config is asked for with those same paths, so its tls block and the chart's agree.
import { natsServerConfig } from "../../mesh/events/nats-config.js";
import { natsServerIdentity } from "../../mesh/topology.js";
import { natsRoutesIdentity } from "./k8s-certificates.js";
import { NATS_CLIENT_PORT, NATS_CLUSTER_PORT, NATS_MONITOR_PORT, tlsSecret } from "./k8s-common.js";

/** Where the chart mounts what it is given (its defaults, kept): the client port's secret, the CA, the JetStream volume. */
export const natsChartPaths = { tlsDir: "/etc/nats-certs/nats", caDir: "/etc/nats-ca-cert", storeDir: "/data" } as const;

export const NATS_REPLICAS = 3;

/** The fields of the chart's values used here (the chart has no schema of its own). */
export interface NatsTls {
  enabled: boolean;
  secretName: string;
  dir?: string;
  cert?: string;
  key?: string;
  merge?: Record<string, unknown>;
}
export interface NatsValues {
  config: {
    cluster: { enabled: boolean; replicas?: number; port?: number; tls?: NatsTls };
    jetstream: { enabled: boolean; fileStore?: { enabled: boolean; dir: string; pvc: { enabled: boolean; size: string } } };
    nats: { port: number; tls: NatsTls };
    monitor: { enabled: boolean; port: number };
    merge: Record<string, unknown>;
  };
  tlsCA: { enabled: boolean; secretName: string; dir: string; key: string };
  container: { env: Record<string, string>; resources: Record<string, Record<string, string>> };
  podTemplate: { topologySpreadConstraints: Record<string, { maxSkew: number; whenUnsatisfiable: string }> };
  natsBox: { enabled: boolean };
}

/** natsServerConfig for the chart's paths, parsed (its text is a comment line, then JSON). */
export function natsConfigForChart(): { max_payload: number; tls: Record<string, unknown>; authorization: unknown; jetstream: { store_dir: string } } {
  const text = natsServerConfig({
    host: "0.0.0.0",
    port: NATS_CLIENT_PORT,
    storeDir: natsChartPaths.storeDir,
    tlsFiles: { ca: `${natsChartPaths.caDir}/ca.crt`, cert: `${natsChartPaths.tlsDir}/tls.crt`, key: `${natsChartPaths.tlsDir}/tls.key` },
  });
  return JSON.parse(text.slice(text.indexOf("\n") + 1));
}

export function natsValues(): NatsValues {
  const config = natsConfigForChart();
  // The chart writes cert_file, key_file and ca_file; the rest of the tls block comes from the config.
  const { ca_file: _ca, cert_file: _cert, key_file: _key, ...tlsRest } = config.tls;
  return {
    config: {
      cluster: {
        enabled: true,
        replicas: NATS_REPLICAS,
        port: NATS_CLUSTER_PORT,
        // Routes between the servers: mutual TLS with their own certificate (no SPIFFE id, so no client user).
        tls: { enabled: true, secretName: tlsSecret(natsRoutesIdentity), merge: { verify: true } },
      },
      jetstream: { enabled: true, fileStore: { enabled: true, dir: natsChartPaths.storeDir, pvc: { enabled: true, size: "10Gi" } } },
      nats: { port: NATS_CLIENT_PORT, tls: { enabled: true, secretName: tlsSecret(natsServerIdentity), dir: natsChartPaths.tlsDir, cert: "tls.crt", key: "tls.key", merge: tlsRest } },
      monitor: { enabled: true, port: NATS_MONITOR_PORT },
      merge: { max_payload: config.max_payload, authorization: config.authorization },
    },
    // cert-manager's secret holds the CA beside the server's certificate.
    tlsCA: { enabled: true, secretName: tlsSecret(natsServerIdentity), dir: natsChartPaths.caDir, key: "ca.crt" },
    container: {
      env: { GOMEMLIMIT: "800MiB" },
      resources: { requests: { cpu: "100m", memory: "256Mi" }, limits: { memory: "1Gi" } },
    },
    podTemplate: { topologySpreadConstraints: { "kubernetes.io/hostname": { maxSkew: 1, whenUnsatisfiable: "ScheduleAnyway" } } },
    // nats-box would need a client certificate of its own; operators use the `client` identity.
    natsBox: { enabled: false },
  };
}

/**
 * How many copies of each stream the services ask NATS to keep (EVENTS_REPLICAS): one per server
 * of the cluster the values describe, 1 when clustering is off (a single server).
 */
export function streamReplicas(values: { config: { cluster: { enabled: boolean; replicas?: number } } }): number {
  const { cluster } = values.config;
  if (!cluster.enabled) return 1;
  if (cluster.replicas === undefined) throw new Error("streamReplicas: a NATS cluster's values must say how many servers it has");
  return cluster.replicas;
}

/** The dev overlay's: one server (no cluster), a small volume. */
export const natsDevValues = {
  config: { cluster: { enabled: false }, jetstream: { enabled: true, fileStore: { pvc: { size: "1Gi" } } } },
} as const;
