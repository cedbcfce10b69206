// The payment service: one payment per order, charged with test cards.
import { fileURLToPath } from "node:url";
import { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";
import type { ServiceDefinition } from "../../mesh/service.js";
import { paymentConsumers, paymentHandlers } from "./handlers.js";

export const payment: ServiceDefinition<typeof PaymentService, Record<string, never>> = {
  name: "payment",
  service: PaymentService,
  migrations: fileURLToPath(new URL("./migrations", import.meta.url)),
  config: {},
  handlers: ({ db }) => paymentHandlers(db),
  consumers: ({ db, logger, publishOutbox }) => paymentConsumers(db, logger, publishOutbox),
};
