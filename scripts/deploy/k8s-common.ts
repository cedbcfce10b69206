// Names every Kubernetes manifest shares (deploy/k8s/): the namespace, labels, images, secrets and
// where they are mounted, so the Deployments, Certificates, NetworkPolicies and the database agree.
import { createHash } from "node:crypto";
import type { IResourceRequirements } from "kubernetes-models/v1/ResourceRequirements";
import type { ISecurityContext } from "kubernetes-models/v1/SecurityContext";
import type { IObjectMeta } from "@kubernetes-models/apimachinery/apis/meta/v1/ObjectMeta";
import { publicServices } from "../../gateway/upstreams.js";
import type { Resources, ServiceName } from "../../mesh/topology.js";

/** Every ShopMesh object lives here (the base kustomization sets it); certificates name it in their DNS SANs. */
export const NAMESPACE = "shopmesh";
export const PART_OF = "shopmesh";

/** A mesh workload: a service or the gateway. */
export type Workload = ServiceName | "gateway";

/** The image's user and group (Dockerfile); the group also owns the mounted secrets (fsGroup), so Envoy reads them too. */
export const APP_UID = 10_001;
/** The Envoy image's own user. */
export const ENVOY_UID = 101;


/** The official NATS Helm chart (not a kustomize resource: installed with helm and deploy/k8s/base/nats/values.yaml). */
export const natsChart = { repo: "https://nats-io.github.io/k8s/helm/charts/", name: "nats", version: "2.14.2", release: "nats" } as const;
/** The labels the NATS chart gives its server pods (release "nats"). */
export const natsPodLabels = { "app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": natsChart.release, "app.kubernetes.io/component": "nats" };
export const NATS_CLIENT_PORT = 4222;
export const NATS_CLUSTER_PORT = 6222;
export const NATS_MONITOR_PORT = 8222;

/** The CloudNativePG cluster: its pods carry cnpg.io/cluster; clients reach the primary at <name>-rw. */
export const POSTGRES_CLUSTER = "postgres";
export const POSTGRES_PORT = 5432;
export const postgresPodLabels = { "cnpg.io/cluster": POSTGRES_CLUSTER };

export const REDIS = "redis";
export const REDIS_PORT = 6379;
/** Who talks to Redis: the catalog's cache and the gateway's rate limiter. */
export const redisClients: readonly Workload[] = ["catalog", "gateway"];

/** The TLS secret cert-manager writes for an identity (tls.crt, tls.key, ca.crt). */
export const tlsSecret = (identity: string) => `${identity}-tls`;
/** The keys of such a secret, which are also the file names where it is mounted. */
export const tlsKeys = { cert: "tls.crt", key: "tls.key", ca: "ca.crt" } as const;

/** Where a Deployment mounts things. Envoy's SDS paths come from scripts/deploy/envoy.ts (SDS_DIR). */
export const mounts = {
  envoyBootstrap: "/etc/envoy/bootstrap",
  appCerts: "/etc/shopmesh/certs",
} as const;

/** Namespaces outside ours that reach in: Prometheus scrapes metrics, the CloudNativePG operator manages its instances. */
export const MONITORING_NAMESPACE = "monitoring";
export const CNPG_OPERATOR_NAMESPACE = "cnpg-system";

/** The gateway and every service whose contract has an RPC served at the edge. */
export const edgeServices = (): ServiceName[] => publicServices.map(([, name]) => name);

export function labels(name: string, component: string): Record<string, string> {
  return { "app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": component };
}
/** What a Service, HPA-less PDB and NetworkPolicy select a workload's pods by. */
export const selector = (name: string) => ({ "app.kubernetes.io/name": name, "app.kubernetes.io/part-of": PART_OF });

export const meta = (name: string, component: string, extra: Partial<IObjectMeta> = {}): IObjectMeta => ({ name, labels: labels(name, component), ...extra });

/** Requests (scheduling) and a memory limit; no CPU limit (throttling a Node.js event loop hurts latency more than it saves). */
export const resources = (r: Resources): IResourceRequirements => ({ requests: { cpu: r.cpu, memory: r.memory }, limits: { memory: r.memoryLimit } });

/** Every container: a fixed non-root user, no privilege escalation, a read-only root, no capabilities. */
export const containerSecurity = (uid: number): ISecurityContext => ({
  runAsNonRoot: true,
  runAsUser: uid,
  runAsGroup: uid,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ["ALL"] },
});

/** Every pod: runs as the image's group, which then owns the mounted secrets (mode 0440), Envoy included. */
export const podSecurity = { runAsNonRoot: true, fsGroup: APP_UID, seccompProfile: { type: "RuntimeDefault" } } as const;
export const SECRET_MODE = 0o440;

/** A short content hash: put on a pod template, a changed ConfigMap rolls the pods. */
export const contentHash = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 16);
