import { randomBytes, scryptSync } from "node:crypto";
import type { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { identity } from "../../services/identity/identity.js";
import type { TestPki } from "./pki.js";
import { startTestService, type ServiceUnderTest } from "./service.js";

export type IdentityUnderTest = ServiceUnderTest<typeof IdentityService>;

/** A password hash as identity's previous scheme wrote it: `scrypt$<log2 N>$<r>$<p>$<salt>$<key>`. */
export function scryptHash(password: string, log2N = 12): string {
  const salt = randomBytes(16);
  const key = scryptSync(password.normalize("NFKC"), salt, 32, { N: 2 ** log2N, r: 8, p: 1 });
  return ["scrypt", log2N, 8, 1, salt.toString("base64url"), key.toString("base64url")].join("$");
}

/** Identity in-process, with the production password hashing (Argon2id, ~17 ms a hash). */
export const startIdentity = (pki: TestPki, env: Record<string, string>): Promise<IdentityUnderTest> => startTestService(identity, pki, env);
