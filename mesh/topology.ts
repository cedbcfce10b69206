// One typed description of the mesh: every service, its contract, where it listens by default,
// whom it calls, which events it owns and which it consumes. The launcher (launcher/main.ts) starts from it, the
// nats-server configuration and each service's NATS permissions are generated from it
// (mesh/events/nats-config.ts), so ports, upstreams and event flows are written down once.
import type { DescService } from "@bufbuild/protobuf";
import { CatalogService } from "../gen/shop/catalog/v1/catalog_pb.js";
import { IdentityService } from "../gen/shop/identity/v1/identity_pb.js";
import { InventoryService } from "../gen/shop/inventory/v1/inventory_pb.js";
import { NotificationService } from "../gen/shop/notification/v1/notification_pb.js";
import { OrderService } from "../gen/shop/order/v1/order_pb.js";
import { PaymentService } from "../gen/shop/payment/v1/payment_pb.js";

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
}

export const topology = {
  identity: { name: "identity", contract: IdentityService, grpcPort: 50051, metricsPort: 9451, upstreams: [], eventSubjects: ["shop.user.>"], consumes: {} },
  catalog: { name: "catalog", contract: CatalogService, grpcPort: 50052, metricsPort: 9452, upstreams: [], eventSubjects: ["shop.product.>"], consumes: {} },
  inventory: {
    name: "inventory", contract: InventoryService, grpcPort: 50053, metricsPort: 9453, upstreams: [], eventSubjects: ["shop.stock.>"],
    consumes: {
      reserve: "shop.order.created",
      "release-on-payment-failed": "shop.payment.failed",
      "release-on-order-cancelled": "shop.order.cancelled",
      commit: "shop.order.confirmed",
    },
  },
  order: {
    name: "order", contract: OrderService, grpcPort: 50054, metricsPort: 9454, upstreams: ["catalog"], eventSubjects: ["shop.order.>"],
    consumes: {
      "stock-reserved": "shop.stock.reserved",
      "stock-rejected": "shop.stock.rejected",
      "payment-failed": "shop.payment.failed",
      "payment-captured": "shop.payment.captured",
    },
  },
  payment: {
    name: "payment", contract: PaymentService, grpcPort: 50055, metricsPort: 9455, upstreams: [], eventSubjects: ["shop.payment.>"],
    consumes: { record: "shop.order.created", charge: "shop.stock.reserved", refund: "shop.order.cancelled" },
  },
  notification: {
    name: "notification", contract: NotificationService, grpcPort: 50056, metricsPort: 9456, upstreams: [], eventSubjects: [],
    consumes: { welcome: "shop.user.registered", "order-confirmed": "shop.order.confirmed", "order-cancelled": "shop.order.cancelled" },
  },
} as const satisfies Record<string, ServiceSpec>;

export type ServiceName = keyof typeof topology;
export const serviceNames = Object.keys(topology) as ServiceName[];

/** The service whose stream holds `subject` (whose eventSubjects match it). */
export function ownerOfSubject(subject: string): ServiceName | undefined {
  const matches = (pattern: string) => pattern.endsWith(".>") ? subject.startsWith(pattern.slice(0, -1)) : subject === pattern;
  return serviceNames.find((name) => topology[name].eventSubjects.some(matches));
}

/** The identity of nats-server's own (server-only) certificate. */
export const natsServerIdentity = "nats";

/**
 * Every identity that holds a certificate: the services, the gateway, the CLI/test caller
 * ("client", also NATS's operator), and nats-server.
 */
export const certificateHolders = [...serviceNames, "gateway", "client", natsServerIdentity] as const;
