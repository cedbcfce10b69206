// deploy/k8s/: the Kubernetes manifests, derived from the topology (`npm run deploy:gen`).
//   base/                 every object: per workload <name>.yaml, certificates, PostgreSQL, Redis
//   base/nats/values.yaml values for the official NATS Helm chart (installed with helm, not kustomize)
//   overlays/dev/         one replica, small requests, one NATS server, the `client` identity
//   overlays/prod/        NetworkPolicies, the gateway behind a LoadBalancer
//
// Prerequisites in the cluster: cert-manager, the CloudNativePG operator, the NATS chart installed
// as release "nats" in the namespace with base/nats/values.yaml (dev: plus
// overlays/dev/nats-values.yaml). No secret is created by hand and none is in the repository:
// every key is cert-manager's, and services log in to PostgreSQL with their certificates
// (k8s-postgres.ts). In prod a release pipeline pins every image by digest (`kustomize edit set
// image shopmesh=<registry>/shopmesh@sha256:…` in overlays/prod) before applying.
import { Namespace } from "kubernetes-models/v1/Namespace";
import { serviceNames } from "../../mesh/topology.js";
import { yamlFile } from "./files.js";
import { certificateObjects } from "./k8s-certificates.js";
import { meta, NAMESPACE, type Workload } from "./k8s-common.js";
import { natsDevValues, natsValues } from "./k8s-nats.js";
import { networkPolicies } from "./k8s-network.js";
import { devClientCertificate, devPostgresPatch, devWorkloadPatches, prodGatewayServicePatch } from "./k8s-overlays.js";
import { postgresCluster, postgresDatabases } from "./k8s-postgres.js";
import { redisObjects } from "./k8s-redis.js";
import { workloadObjects } from "./k8s-workloads.js";

export const K8S_ROOT = "deploy/k8s";

/** A generated manifest file: Kubernetes objects (models or plain CRD objects) as YAML documents. */
const manifestFile = (objects: readonly object[]) =>
  yamlFile(objects.map((object) => ("toJSON" in object && typeof object.toJSON === "function" ? object.toJSON() : object)), { multi: true });
const workloads: Workload[] = [...serviceNames, "gateway"];

interface Kustomization {
  namespace?: string;
  resources: string[];
  patches?: { path: string }[];
}

/** A folder's kustomization.yaml and the files it lists, as path (relative to the folder) → content. */
function kustomizeFolder(resources: Record<string, string>, opts: { namespace?: string; bases?: string[]; patches?: Record<string, string> } = {}) {
  const kustomization: Kustomization = {
    ...(opts.namespace ? { namespace: opts.namespace } : {}),
    resources: [...(opts.bases ?? []), ...Object.keys(resources)],
    ...(opts.patches ? { patches: Object.keys(opts.patches).map((path) => ({ path })) } : {}),
  };
  const file = yamlFile({ apiVersion: "kustomize.config.k8s.io/v1beta1", kind: "Kustomization", ...kustomization });
  return { "kustomization.yaml": file, ...resources, ...opts.patches };
}

const under = (folder: string, files: Record<string, string>) => Object.fromEntries(Object.entries(files).map(([path, content]) => [`${K8S_ROOT}/${folder}/${path}`, content]));

export function kubernetesFiles(): Record<string, string> {
  const namespace = new Namespace({
    metadata: {
      ...meta(NAMESPACE, "namespace"),
      // Our pods meet "restricted"; the NATS chart's do not all say so: enforce baseline, warn on restricted.
      labels: { ...meta(NAMESPACE, "namespace").labels, "pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/warn": "restricted" },
    },
  });
  const base = kustomizeFolder({
    "namespace.yaml": manifestFile([namespace]),
    "certificates.yaml": manifestFile(certificateObjects()),
    "postgres.yaml": manifestFile([postgresCluster(), ...postgresDatabases()]),
    "redis.yaml": manifestFile(redisObjects()),
    ...Object.fromEntries(workloads.map((name) => [`${name}.yaml`, manifestFile(workloadObjects(name))])),
  }, { namespace: NAMESPACE });
  const dev = kustomizeFolder({
    "client-certificate.yaml": manifestFile([devClientCertificate()]),
  }, {
    namespace: NAMESPACE,
    bases: ["../../base"],
    patches: {
      ...Object.fromEntries(workloads.map((name) => [`patches/${name}.yaml`, manifestFile(devWorkloadPatches(name))])),
      "patches/postgres.yaml": manifestFile([devPostgresPatch]),
    },
  });
  const prod = kustomizeFolder({ "network-policies.yaml": manifestFile(networkPolicies()) }, {
    namespace: NAMESPACE,
    bases: ["../../base"],
    patches: { "patches/gateway-service.yaml": manifestFile([prodGatewayServicePatch]) },
  });
  return {
    ...under("base", base),
    [`${K8S_ROOT}/base/nats/values.yaml`]: yamlFile(natsValues()),
    ...under("overlays/dev", dev),
    [`${K8S_ROOT}/overlays/dev/nats-values.yaml`]: yamlFile(natsDevValues),
    ...under("overlays/prod", prod),
  };
}
