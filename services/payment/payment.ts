// The payment service: one payment per order, charged through the card processor (the test
// processor here, which answers like real processors' test cards).
import { fileURLToPath } from "node:url";
import { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";
import { env } from "../../mesh/config.js";
import type { ServiceDefinition } from "../../mesh/service.js";
import { createCharger } from "./charger.js";
import { paymentConsumers, paymentHandlers } from "./handlers.js";
import { testProcessor } from "./processor.js";

const config = {
  /** How long one attempt may hold a charge before another may take it over (same idempotency key). */
  CHARGE_LEASE_MS: env.int(5_000, 100),
  /** How often to look for charges nobody is carrying (their process died) and expired card tokens. */
  SWEEP_INTERVAL_MS: env.int(1_000, 50),
};

export const payment: ServiceDefinition<typeof PaymentService, typeof config> = {
  name: "payment",
  service: PaymentService,
  migrations: fileURLToPath(new URL("./migrations", import.meta.url)),
  config,
  handlers: ({ db }) => paymentHandlers(db),
  consumers: ({ db, logger, publishOutbox, config, onStop }) => {
    const charger = createCharger({ db, logger, processor: testProcessor, publishOutbox, leaseMs: config.CHARGE_LEASE_MS });
    const timer = setInterval(() => void charger.sweep().catch((err) => logger.warn({ err }, "payment sweep failed")), config.SWEEP_INTERVAL_MS);
    onStop(() => clearInterval(timer));
    return paymentConsumers(db, charger, publishOutbox);
  },
};
