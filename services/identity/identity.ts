// The identity service: users, credentials, and the keys that sign access tokens.
import { fileURLToPath } from "node:url";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { ConfigError, env } from "../../mesh/config.js";
import type { ServiceDefinition } from "../../mesh/service.js";
import { ensureAdmin, identityHandlers } from "./handlers.js";
import { OWASP_COST } from "./passwords.js";
import { loadSigner } from "./signing-keys.js";

const config = {
  JWT_ISSUER: env.string("shopmesh-identity"),
  JWT_AUDIENCE: env.string("shopmesh"),
  ACCESS_TOKEN_TTL_SECONDS: env.int(900, 60),
  /** Argon2id's cost for new password hashes: memory in KiB and passes (OWASP's 19 MiB, 2 passes: ~17 ms). */
  PASSWORD_HASH_MEMORY_KIB: env.int(OWASP_COST.memoryKiB, 1024),
  PASSWORD_HASH_PASSES: env.int(OWASP_COST.passes, 1),
  ADMIN_EMAIL: env.optional(),
  ADMIN_PASSWORD: env.optional(),
};

export const identity: ServiceDefinition<typeof IdentityService, typeof config> = {
  name: "identity",
  service: IdentityService,
  migrations: fileURLToPath(new URL("./migrations", import.meta.url)),
  config,
  async handlers({ db, logger, config: c }) {
    if (Boolean(c.ADMIN_EMAIL) !== Boolean(c.ADMIN_PASSWORD)) {
      throw new ConfigError("ADMIN_EMAIL and ADMIN_PASSWORD must be set together");
    }
    if (c.ADMIN_PASSWORD && c.ADMIN_PASSWORD.length < 8) throw new ConfigError("ADMIN_PASSWORD must be at least 8 characters");
    const hashCost = { memoryKiB: c.PASSWORD_HASH_MEMORY_KIB, passes: c.PASSWORD_HASH_PASSES };
    if (c.ADMIN_EMAIL && c.ADMIN_PASSWORD) {
      const id = await ensureAdmin(db, c.ADMIN_EMAIL, c.ADMIN_PASSWORD, hashCost);
      logger.info({ user_id: id, email: c.ADMIN_EMAIL }, "admin account ready");
    }
    const signer = await loadSigner(db, { issuer: c.JWT_ISSUER, audience: c.JWT_AUDIENCE, ttlSeconds: c.ACCESS_TOKEN_TTL_SECONDS });
    return identityHandlers({ db, logger, signer, hashCost });
  },
};
