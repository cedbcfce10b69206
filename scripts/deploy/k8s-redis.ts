// Redis for the catalog's cache and the gateway's shared rate limits: one pod, nothing persisted
// (both tolerate losing it: the cache refills, the limiter falls back to its local count).
import { images } from "./images.js";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { Service } from "kubernetes-models/v1/Service";
import { containerSecurity, meta, podSecurity, REDIS, REDIS_PORT, resources, selector } from "./k8s-common.js";

/** The redis image's own user (alpine). */
const REDIS_UID = 999;
export const redisResources = { cpu: "50m", memory: "128Mi", memoryLimit: "256Mi" } as const;

export function redisObjects() {
  const labels = meta(REDIS, "cache").labels;
  return [
    new Service({ metadata: meta(REDIS, "cache"), spec: { selector: selector(REDIS), ports: [{ name: "redis", port: REDIS_PORT, targetPort: "redis" }] } }),
    new Deployment({
      metadata: meta(REDIS, "cache"),
      spec: {
        replicas: 1,
        selector: { matchLabels: selector(REDIS) },
        template: {
          metadata: { labels },
          spec: {
            automountServiceAccountToken: false,
            securityContext: { ...podSecurity, fsGroup: REDIS_UID },
            containers: [{
              name: REDIS,
              image: images.redis,
              // A cache: no snapshots, no append-only file; evict keys that expire anyway when full.
              args: ["--save", "", "--appendonly", "no", "--maxmemory", "192mb", "--maxmemory-policy", "volatile-lru"],
              ports: [{ name: "redis", containerPort: REDIS_PORT }],
              readinessProbe: { exec: { command: ["redis-cli", "ping"] }, periodSeconds: 5, timeoutSeconds: 2 },
              livenessProbe: { tcpSocket: { port: "redis" }, periodSeconds: 10, timeoutSeconds: 2 },
              resources: resources(redisResources),
              securityContext: containerSecurity(REDIS_UID),
              volumeMounts: [{ name: "data", mountPath: "/data" }],
            }],
            volumes: [{ name: "data", emptyDir: { sizeLimit: "64Mi" } }],
          },
        },
      },
    }),
  ];
}
