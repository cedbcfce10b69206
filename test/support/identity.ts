import type { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { identity } from "../../services/identity/identity.js";
import type { TestPki } from "./pki.js";
import { startTestService, type ServiceUnderTest } from "./service.js";

export type IdentityUnderTest = ServiceUnderTest<typeof IdentityService>;

/** Identity in-process, with the production password hashing (Argon2id, ~17 ms a hash). */
export const startIdentity = (pki: TestPki, env: Record<string, string>): Promise<IdentityUnderTest> => startTestService(identity, pki, env);
