// The order service: orders, priced by the catalog, driven through the saga by events.
import { fileURLToPath } from "node:url";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { OrderService } from "../../gen/shop/order/v1/order_pb.js";
import type { ServiceDefinition } from "../../mesh/service.js";
import { orderConsumers, orderHandlers } from "./handlers.js";
import { OrderWatchers } from "./watchers.js";

// One per process: handlers and consumers wake the same WatchOrder streams.
const watchers = new OrderWatchers();

export const order: ServiceDefinition<typeof OrderService, Record<string, never>> = {
  name: "order",
  service: OrderService,
  migrations: fileURLToPath(new URL("./migrations", import.meta.url)),
  config: {},
  handlers: ({ db, publishOutbox, upstream }) => orderHandlers({ db, catalog: upstream(CatalogService, "catalog"), watchers, publishOutbox }),
  consumers: ({ db, publishOutbox }) => orderConsumers({ db, watchers, publishOutbox }),
};
