// The public services behind the gateway, one mesh client each (deadline, retries for idempotent
// calls, circuit breaker, round robin, mTLS as "gateway"). Which of their RPCs the edge serves,
// and to whom, the contracts say (see access.ts).
import type { DescService } from "@bufbuild/protobuf";
import { CatalogService } from "../gen/shop/catalog/v1/catalog_pb.js";
import { IdentityService } from "../gen/shop/identity/v1/identity_pb.js";
import { InventoryService } from "../gen/shop/inventory/v1/inventory_pb.js";
import { NotificationService } from "../gen/shop/notification/v1/notification_pb.js";
import { OrderService } from "../gen/shop/order/v1/order_pb.js";
import { PaymentService } from "../gen/shop/payment/v1/payment_pb.js";
import { createClient, type MeshClient, type ResiliencePolicy } from "../mesh/rpc/client.js";
import type { TlsFiles } from "../mesh/certs.js";
import type { ServiceName } from "../mesh/topology.js";
import type { Registry } from "prom-client";

export const publicServices: readonly [DescService, ServiceName][] = [
  [IdentityService, "identity"],
  [CatalogService, "catalog"],
  [InventoryService, "inventory"],
  [OrderService, "order"],
  [PaymentService, "payment"],
  [NotificationService, "notification"],
];

/** The mesh name of a public service ("catalog"), for messages that say which service failed. */
export const serviceName = (service: DescService): ServiceName => publicServices.find(([s]) => s === service)![1];

export type Upstreams = Map<DescService, MeshClient<DescService>>;

export function connectUpstreams(
  tls: TlsFiles,
  addresses: (name: ServiceName) => string[],
  policy: Partial<ResiliencePolicy>,
  metrics: Registry,
): Upstreams {
  return new Map(publicServices.map(([service, name]) => [service, createClient(service, { upstream: name, addresses: addresses(name), tls, policy, metrics })]));
}
