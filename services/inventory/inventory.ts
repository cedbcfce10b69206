// The inventory service: stock per product and the reservations orders hold.
import { fileURLToPath } from "node:url";
import { InventoryService } from "../../gen/shop/inventory/v1/inventory_pb.js";
import { env } from "../../mesh/config.js";
import type { ServiceDefinition } from "../../mesh/service.js";
import { demoProducts } from "../catalog/demo.js";
import { inventoryConsumers, inventoryHandlers } from "./handlers.js";
import { createStore } from "./store.js";

const config = {
  /** Give the demo catalog's products their demo stock when they have none ("false" to skip). */
  SEED_DEMO: env.oneOf(["true", "false"], "true"),
};

export const inventory: ServiceDefinition<typeof InventoryService, typeof config> = {
  name: "inventory",
  service: InventoryService,
  migrations: fileURLToPath(new URL("./migrations", import.meta.url)),
  config,
  async handlers({ db, logger, config: c }) {
    if (c.SEED_DEMO === "true") {
      logger.info("seeding");
      const added = await db.tx((q) => createStore(q).seed(demoProducts.map((p) => ({ productId: p.id, available: p.stock }))));
      if (added) logger.info({ products: added }, "demo stock seeded");
    }
    return inventoryHandlers(db);
  },
  consumers: () => inventoryConsumers(),
};
