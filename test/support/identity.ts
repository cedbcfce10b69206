import type { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { identity } from "../../services/identity/identity.js";
import type { TestPki } from "./pki.js";
import { startTestService, type ServiceUnderTest } from "./service.js";

export type IdentityUnderTest = ServiceUnderTest<typeof IdentityService>;

/** Identity with cheap password hashes (SCRYPT_LOG2_N=12) to keep the suite fast; production uses 15. */
export const startIdentity = (pki: TestPki, env: Record<string, string>): Promise<IdentityUnderTest> =>
  startTestService(identity, pki, { SCRYPT_LOG2_N: "12", ...env });
