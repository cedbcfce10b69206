// The notification service: tells users what happened to their account and orders.
import { fileURLToPath } from "node:url";
import { NotificationService } from "../../gen/shop/notification/v1/notification_pb.js";
import type { ServiceDefinition } from "../../mesh/service.js";
import { notificationConsumers, notificationHandlers } from "./handlers.js";
import { databaseSender } from "./sender.js";

export const notification: ServiceDefinition<typeof NotificationService, Record<string, never>> = {
  name: "notification",
  service: NotificationService,
  migrations: fileURLToPath(new URL("./migrations", import.meta.url)),
  config: {},
  handlers: ({ db }) => notificationHandlers(db),
  consumers: ({ logger }) => notificationConsumers(databaseSender(logger)),
};
