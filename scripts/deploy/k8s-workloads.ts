// The Kubernetes objects of one mesh workload (a service or the gateway), derived from the
// topology: ServiceAccount, the ConfigMap holding its Envoy sidecar's config, Services, a
// Deployment with Envoy as a native sidecar, an HPA and a PodDisruptionBudget.
//
// One pod: Envoy starts first (an init container with restartPolicy Always; the app starts once
// Envoy's startup probe passes) and stops last (after the app exits). It takes the service's
// grpcPort for inbound mTLS and the upstreams' ports on loopback for outbound; the app listens
// h2c on loopback (MESH_TRANSPORT=sidecar). Readiness asks the app's gRPC health through Envoy's
// ops port, so a pod is ready only when both answer.
import { images } from "./images.js";
import { ConfigMap } from "kubernetes-models/v1/ConfigMap";
import { Service } from "kubernetes-models/v1/Service";
import { ServiceAccount } from "kubernetes-models/v1/ServiceAccount";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import type { IContainer } from "kubernetes-models/v1/Container";
import type { IEnvVar } from "kubernetes-models/v1/EnvVar";
import type { IProbe } from "kubernetes-models/v1/Probe";
import type { IVolume } from "kubernetes-models/v1/Volume";
import { gateway, sidecar, topology, type Resources, type ServiceName } from "../../mesh/topology.js";
import { envoyConfig, SDS_DIR, sdsFiles } from "./envoy.js";
import {
  APP_UID, containerSecurity, contentHash, edgeServices, ENVOY_UID, meta, mounts, NATS_CLIENT_PORT, natsChart,
  podSecurity, REDIS, REDIS_PORT, redisClients, resources, SECRET_MODE, selector, tlsKeys, tlsSecret, type Workload,
} from "./k8s-common.js";
import { natsValues, streamReplicas } from "./k8s-nats.js";
import { databaseUrl } from "./k8s-postgres.js";
import { yamlFile } from "./files.js";

/** The two containers of every pod. The HPA scales on the app container's usage. */
export const APP_CONTAINER = "app";
export const ENVOY_CONTAINER = "envoy";

/**
 * Shutdown: the pod leaves its Service's endpoints when it starts terminating, but callers' Envoys
 * resolve the headless name only every dns_refresh_rate (Envoy's default, 5 s, which the sidecars
 * keep) and the cluster DNS answers with a TTL (CoreDNS: 5 s). The app keeps serving through
 * preStop, then drains its calls; Envoy stops after the app.
 */
export const ENVOY_DNS_REFRESH_SECONDS = 5;
export const PRESTOP_SECONDS = 15;
/** The services' drain (DRAIN_TIMEOUT_MS); the gateway gives open streams 5 s (gateway/gateway.ts). */
export const DRAIN_SECONDS: Record<"service" | "gateway", number> = { service: 10, gateway: 5 };
/** Envoy's own exit after SIGTERM, and slack. */
const ENVOY_STOP_SECONDS = 5;

export const ENVOY_CONFIG_FILE = "envoy.yaml";
export const envoyConfigMap = (name: Workload) => `${name}-envoy`;
/** Pod template annotation: a changed Envoy config (static, never hot-reloaded) rolls the pods. */
export const ENVOY_HASH_ANNOTATION = "checksum/envoy-config";

/** Its Envoy config as envoy/<name>.yaml holds it. */
export const envoyConfigText = (name: Workload) => yamlFile(envoyConfig(name, edgeServices()));

const httpProbe = (path: string, port: number | string, timing: Partial<IProbe>): IProbe => ({ httpGet: { path, port }, timeoutSeconds: 2, ...timing });

function envoyContainer(name: Workload, grpcPort: number | undefined, requests: Resources): IContainer {
  return {
    name: ENVOY_CONTAINER,
    image: images.envoy,
    // A native sidecar (Kubernetes >= 1.29): started before the app, stopped after it.
    restartPolicy: "Always",
    args: ["-c", `${mounts.envoyBootstrap}/${ENVOY_CONFIG_FILE}`, "--disable-hot-restart", "--log-level", "warn"],
    ports: [
      ...(grpcPort === undefined ? [] : [{ name: "grpc", containerPort: grpcPort }]),
      { name: "envoy-ops", containerPort: sidecar.opsPort },
    ],
    startupProbe: httpProbe("/ready", sidecar.opsPort, { periodSeconds: 1, failureThreshold: 30 }),
    readinessProbe: httpProbe("/ready", sidecar.opsPort, { periodSeconds: 5, failureThreshold: 2 }),
    resources: resources(requests),
    securityContext: containerSecurity(ENVOY_UID),
    volumeMounts: [
      { name: "envoy-bootstrap", mountPath: mounts.envoyBootstrap, readOnly: true },
      { name: "envoy-sds", mountPath: SDS_DIR, readOnly: true },
    ],
  };
}

function serviceEnv(name: ServiceName): IEnvVar[] {
  const spec = topology[name];
  return [
    { name: "MESH_TRANSPORT", value: "sidecar" },
    { name: "HOST", value: "127.0.0.1" },
    { name: "PORT", value: String(spec.grpcPort + sidecar.appPortOffset) },
    { name: "METRICS_HOST", value: "0.0.0.0" },
    { name: "METRICS_PORT", value: String(spec.metricsPort) },
    { name: "CERTS_DIR", value: mounts.appCerts },
    { name: "DATABASE_URL", value: databaseUrl(name) },
    { name: "NATS_URL", value: `tls://${natsChart.release}:${NATS_CLIENT_PORT}` },
    // A copy of each stream on every NATS server (the dev overlay, one server, sets 1).
    { name: "EVENTS_REPLICAS", value: String(streamReplicas(natsValues())) },
    ...(redisClients.includes(name) ? [{ name: "REDIS_URL", value: `redis://${REDIS}:${REDIS_PORT}` }] : []),
    { name: "DRAIN_TIMEOUT_MS", value: String(DRAIN_SECONDS.service * 1000) },
    { name: "LOG_LEVEL", value: "info" },
  ];
}

const gatewayEnv: IEnvVar[] = [
  { name: "MESH_TRANSPORT", value: "sidecar" },
  // The gateway serves HTTP itself; only its calls to the services go through the sidecar.
  { name: "HOST", value: "0.0.0.0" },
  { name: "PORT", value: String(gateway.httpPort) },
  { name: "METRICS_HOST", value: "0.0.0.0" },
  { name: "METRICS_PORT", value: String(gateway.metricsPort) },
  { name: "CERTS_DIR", value: mounts.appCerts },
  { name: "REDIS_URL", value: `redis://${REDIS}:${REDIS_PORT}` },
  // The events that invalidate its cache of public reads.
  { name: "NATS_URL", value: `tls://${natsChart.release}:${NATS_CLIENT_PORT}` },
  { name: "LOG_LEVEL", value: "info" },
];

function appContainer(name: Workload): IContainer {
  const isGateway = name === "gateway";
  const metricsPort = isGateway ? gateway.metricsPort : topology[name].metricsPort;
  const probes: Pick<IContainer, "startupProbe" | "readinessProbe" | "livenessProbe"> = isGateway
    ? {
        startupProbe: httpProbe("/healthz", "http", { periodSeconds: 2, failureThreshold: 30 }),
        readinessProbe: httpProbe("/readyz", "http", { periodSeconds: 5, failureThreshold: 2 }),
        livenessProbe: httpProbe("/healthz", "http", { periodSeconds: 10, failureThreshold: 3 }),
      }
    : {
        // The metrics server opens last, after migrations: it says the process is up.
        startupProbe: httpProbe("/metrics", "metrics", { periodSeconds: 2, failureThreshold: 90 }),
        // gRPC health (grpc.health.v1) through Envoy's ops listener to the app on loopback.
        readinessProbe: { grpc: { port: sidecar.opsPort }, periodSeconds: 5, timeoutSeconds: 2, failureThreshold: 2 },
        livenessProbe: httpProbe("/metrics", "metrics", { periodSeconds: 10, failureThreshold: 3 }),
      };
  return {
    name: APP_CONTAINER,
    image: images.shopmesh,
    command: ["node", isGateway ? "dist/gateway/main.js" : `dist/services/${name}/main.js`],
    env: isGateway ? gatewayEnv : serviceEnv(name),
    ports: [...(isGateway ? [{ name: "http", containerPort: gateway.httpPort }] : []), { name: "metrics", containerPort: metricsPort }],
    ...probes,
    lifecycle: { preStop: { sleep: { seconds: PRESTOP_SECONDS } } },
    resources: resources(isGateway ? gateway.resources : topology[name].resources),
    securityContext: containerSecurity(APP_UID),
    volumeMounts: [
      { name: "certs", mountPath: mounts.appCerts, readOnly: true },
      { name: "tmp", mountPath: "/tmp" },
    ],
  };
}

function volumes(name: Workload): IVolume[] {
  const certItems = Object.values(tlsKeys);
  return [
    { name: "envoy-bootstrap", configMap: { name: envoyConfigMap(name), items: [{ key: ENVOY_CONFIG_FILE, path: ENVOY_CONFIG_FILE }] } },
    {
      // The SDS files and the certificate they name in one projected volume: when cert-manager
      // renews the secret, the volume's files are swapped by a move inside SDS_DIR, the directory
      // Envoy watches, and Envoy loads the new certificate without a restart.
      name: "envoy-sds",
      projected: {
        defaultMode: SECRET_MODE,
        sources: [
          { configMap: { name: envoyConfigMap(name), items: Object.keys(sdsFiles("")).map((file) => ({ key: `${file}.yaml`, path: `${file}.yaml` })) } },
          { secret: { name: tlsSecret(name), items: certItems.map((key) => ({ key, path: `certs/${key}` })) } },
        ],
      },
    },
    { name: "certs", secret: { secretName: tlsSecret(name), defaultMode: SECRET_MODE, items: certItems.map((key) => ({ key, path: key })) } },
    { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
  ];
}

export const terminationGraceSeconds = (name: Workload) =>
  PRESTOP_SECONDS + DRAIN_SECONDS[name === "gateway" ? "gateway" : "service"] + ENVOY_STOP_SECONDS + 5;

function deployment(name: Workload, component: string): Deployment {
  const grpcPort = name === "gateway" ? undefined : topology[name].grpcPort;
  return new Deployment({
    metadata: meta(name, component),
    spec: {
      // No replicas: the HPA owns the count (a re-apply must not reset it).
      selector: { matchLabels: selector(name) },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: 1 } },
      template: {
        metadata: { labels: meta(name, component).labels, annotations: { [ENVOY_HASH_ANNOTATION]: contentHash(envoyConfigText(name)) } },
        spec: {
          serviceAccountName: name,
          automountServiceAccountToken: false,
          securityContext: podSecurity,
          terminationGracePeriodSeconds: terminationGraceSeconds(name),
          topologySpreadConstraints: [{ maxSkew: 1, topologyKey: "kubernetes.io/hostname", whenUnsatisfiable: "ScheduleAnyway", labelSelector: { matchLabels: selector(name) } }],
          initContainers: [envoyContainer(name, grpcPort, sidecar.resources)],
          containers: [appContainer(name)],
          volumes: volumes(name),
        },
      },
    },
  });
}

function autoscaler(name: Workload, component: string): HorizontalPodAutoscaler {
  const { scaling } = name === "gateway" ? gateway : topology[name];
  const target = (resource: "cpu" | "memory", percent: number) => ({
    type: "ContainerResource",
    containerResource: { name: resource, container: APP_CONTAINER, target: { type: "Utilization", averageUtilization: percent } },
  });
  return new HorizontalPodAutoscaler({
    metadata: meta(name, component),
    spec: {
      scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name },
      minReplicas: scaling.minReplicas,
      maxReplicas: scaling.maxReplicas,
      metrics: [target("cpu", scaling.cpuPercent), target("memory", scaling.memoryPercent)],
      // Up as fast as the default; down one pod every two minutes after five quiet minutes.
      behavior: { scaleDown: { stabilizationWindowSeconds: 300, policies: [{ type: "Pods", value: 1, periodSeconds: 120 }] } },
    },
  });
}

/** Every object of one workload, in apply order. */
export function workloadObjects(name: Workload) {
  const component = name === "gateway" ? "gateway" : "service";
  const envoy = sdsFiles(`${SDS_DIR}/certs`);
  const configMap = new ConfigMap({
    metadata: meta(envoyConfigMap(name), component),
    data: {
      [ENVOY_CONFIG_FILE]: envoyConfigText(name),
      ...Object.fromEntries(Object.entries(envoy).map(([file, secret]) => [`${file}.yaml`, yamlFile(secret)])),
    },
  });
  const metricsPort = name === "gateway" ? gateway.metricsPort : topology[name].metricsPort;
  const opsPort = { name: "envoy-ops", port: sidecar.opsPort, targetPort: "envoy-ops" };
  // Headless: callers' Envoys resolve every ready pod and balance requests over them (a ClusterIP
  // would pin each HTTP/2 connection, and so all its calls, to one pod).
  const headless = new Service({
    metadata: meta(name === "gateway" ? "gateway-metrics" : name, component),
    spec: {
      clusterIP: "None",
      selector: selector(name),
      ports: [
        ...(name === "gateway" ? [] : [{ name: "grpc", port: topology[name].grpcPort, targetPort: "grpc" }]),
        { name: "metrics", port: metricsPort, targetPort: "metrics" },
        opsPort,
      ],
    },
  });
  const edge = name === "gateway"
    ? [new Service({ metadata: meta("gateway", component), spec: { type: "ClusterIP", selector: selector(name), ports: [{ name: "http", port: gateway.httpPort, targetPort: "http" }] } })]
    : [];
  const pdb = new PodDisruptionBudget({
    metadata: meta(name, component),
    spec: { maxUnavailable: 1, selector: { matchLabels: selector(name) }, unhealthyPodEvictionPolicy: "AlwaysAllow" },
  });
  return [
    new ServiceAccount({ metadata: meta(name, component), automountServiceAccountToken: false }),
    configMap,
    headless,
    ...edge,
    deployment(name, component),
    autoscaler(name, component),
    pdb,
  ];
}
