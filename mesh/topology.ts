// One typed description of the mesh: every service, its contract, where it listens by default,
// whom it calls, which events it owns and which it consumes, how callers treat it (deadline,
// retries, breaker, ejection), what it needs to run (resources) and how far it scales. Derived
// from it: the launcher's processes (launcher/), the gateway's upstreams (gateway/upstreams.ts),
// the nats-server configuration and each NATS user's permissions (mesh/events/nats-config.ts),
// the clients' resilience policy (mesh/service.ts), and every deploy file (`npm run deploy:gen`:
// envoy/, docker-compose.yml, deploy/k8s/). Each fact is written down once, here.
import type { DescService } from "@bufbuild/protobuf";
import { CatalogService } from "../gen/shop/catalog/v1/catalog_pb.js";
import { IdentityService } from "../gen/shop/identity/v1/identity_pb.js";
import { InventoryService } from "../gen/shop/inventory/v1/inventory_pb.js";
import { NotificationService } from "../gen/shop/notification/v1/notification_pb.js";
import { OrderService } from "../gen/shop/order/v1/order_pb.js";
import { PaymentService } from "../gen/shop/payment/v1/payment_pb.js";

/**
 * How callers treat a service. The app's clients apply the first six (mesh/rpc/client.ts); a
 * sidecar calling it applies the last two (outlier ejection of a failing replica).
 */
export interface ResiliencePolicy {
  /** Deadline for a call when the caller has none (or a later one). */
  timeoutMs: number;
  /** Attempts in all, including the first, for retryable calls. */
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  /** Consecutive failures that open a caller's breaker. */
  breakerFailures: number;
  /** How long an open breaker fails fast before letting a probe call through. */
  breakerHalfOpenAfterMs: number;
  /** Consecutive failures after which a sidecar stops sending to one replica, and for how long. */
  ejectAfterFailures: number;
  ejectForSeconds: number;
}

export const defaultResilience: ResiliencePolicy = {
  timeoutMs: 5_000,
  maxAttempts: 3,
  initialBackoffMs: 50,
  maxBackoffMs: 1_000,
  breakerFailures: 5,
  breakerHalfOpenAfterMs: 500,
  ejectAfterFailures: 5,
  ejectForSeconds: 30,
};

/** What one container asks of its node: requests (scheduling), and a memory limit (it is killed above it). */
export interface Resources {
  cpu: string;
  memory: string;
  memoryLimit: string;
}

/** Replicas when deployed: an autoscaler keeps between min and max, aiming at these utilisations of the requests. */
export interface Scaling {
  minReplicas: number;
  maxReplicas: number;
  cpuPercent: number;
  memoryPercent: number;
}

/** Measured on the launcher: an idle service holds ~95 MiB; the limit leaves room for load. */
const serviceResources: Resources = { cpu: "100m", memory: "128Mi", memoryLimit: "384Mi" };
const defaultScaling: Scaling = { minReplicas: 2, maxReplicas: 10, cpuPercent: 70, memoryPercent: 80 };

export interface ServiceSpec {
  /** Also the certificate identity: spiffe://shopmesh/<name>. */
  name: string;
  /** Its contract: the generated descriptor it serves (which RPCs the edge serves, the contract's options say). */
  contract: DescService;
  grpcPort: number;
  metricsPort: number;
  /** Services this one calls synchronously. */
  upstreams: readonly string[];
  /** Subjects of the events it owns (its JetStream stream, SHOP_<NAME>, holds them). */
  eventSubjects: readonly string[];
  /**
   * The events it consumes: consumer name → event subject. Its durable consumer is
   * `<service>-<name>` on the stream of the subject's owner. Its NATS permissions allow exactly
   * these, and a service refuses to start a consumer that is not listed here.
   */
  consumes: Readonly<Record<string, string>>;
  /**
   * Events after which it drops an in-memory cache of another service's answers (see
   * mesh/invalidation/): it subscribes to exactly these (core NATS), as the gateway does.
   */
  cacheInvalidatedBy?: readonly string[];
  resilience: ResiliencePolicy;
  resources: Resources;
  scaling: Scaling;
}

/** What every service shares unless it says otherwise. */
const common = { resilience: defaultResilience, resources: serviceResources, scaling: defaultScaling } as const;

export const topology = {
  identity: { name: "identity", contract: IdentityService, grpcPort: 50051, metricsPort: 9451, upstreams: [], eventSubjects: ["shop.user.>"], consumes: {}, ...common },
  catalog: { name: "catalog", contract: CatalogService, grpcPort: 50052, metricsPort: 9452, upstreams: [], eventSubjects: ["shop.product.>"], consumes: {}, ...common },
  inventory: {
    name: "inventory", contract: InventoryService, grpcPort: 50053, metricsPort: 9453, upstreams: [], eventSubjects: ["shop.stock.>"],
    consumes: {
      reserve: "shop.order.created",
      "release-on-payment-failed": "shop.payment.failed",
      "release-on-order-cancelled": "shop.order.cancelled",
      commit: "shop.order.confirmed",
    },
    ...common,
  },
  order: {
    name: "order", contract: OrderService, grpcPort: 50054, metricsPort: 9454, upstreams: ["catalog"], eventSubjects: ["shop.order.>"],
    consumes: {
      "stock-rejected": "shop.stock.rejected",
      "payment-failed": "shop.payment.failed",
      "payment-captured": "shop.payment.captured",
    },
    // Its cache of catalog's prices (services/order/prices.ts): no catalog call per order.
    cacheInvalidatedBy: ["shop.product.updated"],
    ...common,
  },
  payment: {
    name: "payment", contract: PaymentService, grpcPort: 50055, metricsPort: 9455, upstreams: [], eventSubjects: ["shop.payment.>"],
    consumes: { charge: "shop.stock.reserved", refund: "shop.order.cancelled" },
    ...common,
  },
  notification: {
    name: "notification", contract: NotificationService, grpcPort: 50056, metricsPort: 9456, upstreams: [], eventSubjects: [],
    consumes: { welcome: "shop.user.registered", "order-confirmed": "shop.order.confirmed", "order-cancelled": "shop.order.cancelled" },
    ...common,
    // Sends mail at the pace events arrive; more replicas only split the same consumers.
    scaling: { ...defaultScaling, maxReplicas: 4 },
  },
} as const satisfies Record<string, ServiceSpec>;

export type ServiceName = keyof typeof topology;
export const serviceNames = Object.keys(topology) as ServiceName[];

/** The service whose stream holds `subject` (whose eventSubjects match it). */
export function ownerOfSubject(subject: string): ServiceName | undefined {
  const matches = (pattern: string) => pattern.endsWith(".>") ? subject.startsWith(pattern.slice(0, -1)) : subject === pattern;
  return serviceNames.find((name) => topology[name].eventSubjects.some(matches));
}

/**
 * The gateway: the public HTTP edge (REST/JSON, Connect, gRPC-Web). It calls every service whose
 * contract exposes an RPC at the edge (derived in gateway/upstreams.ts).
 */
export const gateway = {
  name: "gateway",
  httpPort: 8080,
  metricsPort: 9450,
  resources: { cpu: "200m", memory: "160Mi", memoryLimit: "512Mi" },
  scaling: defaultScaling,
  /**
   * Events after which the gateway drops its cached public reads (gateway/public-reads.ts) of the
   * service that owns them. Every replica subscribes to exactly these (core NATS), and NATS lets it
   * do exactly that and nothing else (mesh/events/nats-config.ts).
   */
  cacheInvalidatedBy: ["shop.product.updated"],
} as const satisfies { name: string; httpPort: number; metricsPort: number; resources: Resources; scaling: Scaling; cacheInvalidatedBy: readonly string[] };

/**
 * Where a service runs behind an Envoy sidecar (MESH_TRANSPORT=sidecar), the same in every pod or
 * compose network namespace: Envoy takes the service's grpcPort (callers' addresses do not change)
 * and the app listens on loopback at grpcPort + appPortOffset; Envoy's admin stays on loopback,
 * its ops port (readiness, Prometheus stats, the app's gRPC health) is open.
 */
export const sidecar = {
  appPortOffset: 10_000,
  adminPort: 9901,
  opsPort: 15021,
  resources: { cpu: "50m", memory: "64Mi", memoryLimit: "256Mi" },
} as const satisfies { appPortOffset: number; adminPort: number; opsPort: number; resources: Resources };

/** Where a service's app listens by default: its grpcPort, or behind a sidecar grpcPort + appPortOffset. */
export const appPort = (name: ServiceName, transport: "mtls" | "sidecar"): number =>
  topology[name].grpcPort + (transport === "sidecar" ? sidecar.appPortOffset : 0);

/** The identity of nats-server's own (server-only) certificate. */
export const natsServerIdentity = "nats";

/**
 * Every identity that holds a certificate: the services, the gateway, the CLI/test caller
 * ("client", also NATS's operator), and nats-server.
 */
export const certificateHolders = [...serviceNames, "gateway", "client", natsServerIdentity] as const;
