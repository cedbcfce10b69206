// One typed description of the mesh: every service, where it listens by default, and whom it
// calls. The launcher (scripts/start.ts) starts from it; later the deploy files are generated
// from it, so ports and upstreams are written down once.
export interface ServiceSpec {
  /** Also the certificate identity: spiffe://shopmesh/<name>. */
  name: string;
  grpcPort: number;
  metricsPort: number;
  /** Services this one calls synchronously. */
  upstreams: readonly string[];
  /** Subjects of the events it owns (its JetStream stream, SHOP_<NAME>, holds them). */
  eventSubjects: readonly string[];
}

export const topology = {
  identity: { name: "identity", grpcPort: 50051, metricsPort: 9451, upstreams: [], eventSubjects: ["shop.user.>"] },
  catalog: { name: "catalog", grpcPort: 50052, metricsPort: 9452, upstreams: [], eventSubjects: ["shop.product.>"] },
  inventory: { name: "inventory", grpcPort: 50053, metricsPort: 9453, upstreams: [], eventSubjects: ["shop.stock.>"] },
  order: { name: "order", grpcPort: 50054, metricsPort: 9454, upstreams: ["catalog"], eventSubjects: ["shop.order.>"] },
  payment: { name: "payment", grpcPort: 50055, metricsPort: 9455, upstreams: [], eventSubjects: ["shop.payment.>"] },
  notification: { name: "notification", grpcPort: 50056, metricsPort: 9456, upstreams: [], eventSubjects: [] },
} as const satisfies Record<string, ServiceSpec>;

export type ServiceName = keyof typeof topology;
export const serviceNames = Object.keys(topology) as ServiceName[];

/** Every identity that holds a certificate: the services, the gateway, and the CLI/test caller. */
export const certificateHolders = [...serviceNames, "gateway", "client"] as const;
