// The payment service: card numbers kept behind single-use tokens, one payment per order, charged
// through the card processor (the test processor here, which answers like real processors' test
// cards).
import { fileURLToPath } from "node:url";
import { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";
import { env } from "../../mesh/config.js";
import type { ServiceDefinition } from "../../mesh/service.js";
import { createCharger } from "./charger.js";
import { paymentConsumers, paymentHandlers } from "./handlers.js";
import { createMethods } from "./methods.js";
import { testProcessor } from "./processor.js";

const config = {
  /** How long a payment method's token can be used for an order. */
  PAYMENT_METHOD_TTL_SECONDS: env.int(900, 1),
  /** How long one attempt may hold a charge before another may take it over (same idempotency key). */
  CHARGE_LEASE_MS: env.int(5_000, 100),
  /** How often to finish charges nobody is carrying (their process died) and purge expired tokens. */
  SWEEP_INTERVAL_MS: env.int(1_000, 50),
};

export const payment: ServiceDefinition<typeof PaymentService, typeof config> = {
  name: "payment",
  service: PaymentService,
  migrations: fileURLToPath(new URL("./migrations", import.meta.url)),
  config,
  handlers: ({ db, config }) => paymentHandlers(db, config.PAYMENT_METHOD_TTL_SECONDS * 1_000),
  consumers: ({ db, logger, config, every }) => {
    const charger = createCharger({ db, logger, processor: testProcessor, leaseMs: config.CHARGE_LEASE_MS });
    every("finish-stranded-charges", config.SWEEP_INTERVAL_MS, charger.sweep);
    every("purge-expired-payment-methods", config.SWEEP_INTERVAL_MS, () => createMethods(db).purgeExpired());
    return paymentConsumers(charger, logger);
  },
};
