// The order service: orders, priced by the catalog, driven through the saga by events.
import { fileURLToPath } from "node:url";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { OrderService } from "../../gen/shop/order/v1/order_pb.js";
import { env } from "../../mesh/config.js";
import type { ServiceDefinition } from "../../mesh/service.js";
import { cancelOverdue, orderConsumers, orderHandlers } from "./handlers.js";
import { cachedPrices } from "./prices.js";
import { OrderWatchers } from "./watchers.js";

// One per process: handlers and consumers wake the same WatchOrder streams.
const watchers = new OrderWatchers();

const config = {
  /** An order still PENDING this long after it was placed is cancelled (stock released, payment voided or refunded). */
  ORDER_TIMEOUT_SECONDS: env.int(60, 1),
};

/** How often to look for overdue orders: a quarter of the timeout, between 0.25 s and 5 s. */
const sweepIntervalMs = (timeoutSeconds: number) => Math.min(5_000, Math.max(250, timeoutSeconds * 250));

export const order: ServiceDefinition<typeof OrderService, typeof config> = {
  name: "order",
  service: OrderService,
  migrations: fileURLToPath(new URL("./migrations", import.meta.url)),
  config,
  handlers: ({ db, upstream, every, config, metrics, keepInvalidated }) => {
    const timeoutSeconds = config.ORDER_TIMEOUT_SECONDS;
    every("cancel-overdue-orders", sweepIntervalMs(timeoutSeconds), () => cancelOverdue({ db, watchers }, timeoutSeconds));
    const prices = cachedPrices(upstream(CatalogService, "catalog"), { metrics, keepInvalidated });
    return orderHandlers({ db, prices, watchers, timeoutSeconds });
  },
  consumers: ({ db }) => orderConsumers({ db, watchers }),
};
