// Every image the deploy files run, pinned by tag, in one place for compose and Kubernetes. A
// release pins digests on top (the prod overlay: `kustomize edit set image`).
import packageJson from "../../package.json" with { type: "json" };

export const images = {
  /** Ours, built from the Dockerfile, tagged with the package version. */
  shopmesh: `shopmesh:${packageJson.version}`,
  /** 1.38 is the first Envoy with grpc_timeout_returns_deadline_exceeded, which the sidecars set; .7 its latest patch. */
  envoy: "envoyproxy/envoy:v1.38.7",
  /** compose's PostgreSQL; Kubernetes runs CloudNativePG's build of the same major version. */
  postgres: "postgres:17.11-bookworm",
  cnpgPostgres: "ghcr.io/cloudnative-pg/postgresql:17.5",
  /** The alpine variant: the scratch one has no shell and no wget for a health check. */
  nats: "nats:2.14.5-alpine",
  redis: "redis:7.4.11-bookworm",
} as const;
