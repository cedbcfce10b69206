// Password hashes: Argon2id at OWASP's cost for every new hash; the previous scheme (scrypt) still
// verifies, and is marked for replacement, as is a hash of a lower cost.
import { describe, expect, it } from "vitest";
import { hashPassword, needsRehash, OWASP_COST, verifyPassword } from "../../services/identity/passwords.js";
import { scryptHash } from "../support/identity.js";

describe("password hashes", () => {
  it("are Argon2id with 19 MiB, 2 passes and 1 lane, salted, and verify only the right password", async () => {
    const [a, b] = [await hashPassword("correct horse"), await hashPassword("correct horse")];
    expect(a).toMatch(/^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$/);
    expect(a).not.toBe(b); // a new salt each time
    expect(await verifyPassword("correct horse", a)).toBe(true);
    expect(await verifyPassword("correct horsf", a)).toBe(false);
    expect(await verifyPassword("", a)).toBe(false);
  });

  it("compare passwords in one Unicode normal form", async () => {
    const stored = await hashPassword("ﬁnal café"); // a ligature and a composed é
    expect(await verifyPassword("final cafe\u0301", stored)).toBe(true);
  });

  it("still verify the previous scheme's hashes, and mark them and lower costs for replacement", async () => {
    const legacy = scryptHash("correct horse");
    expect(await verifyPassword("correct horse", legacy)).toBe(true);
    expect(await verifyPassword("wrong horse", legacy)).toBe(false);
    expect(needsRehash(legacy)).toBe(true);

    const current = await hashPassword("correct horse");
    expect(needsRehash(current)).toBe(false);
    expect(needsRehash(current, { ...OWASP_COST, passes: 3 })).toBe(true); // the policy was raised
    expect(needsRehash(await hashPassword("x", { memoryKiB: 8_192, passes: 2 }))).toBe(true); // weaker
    expect(needsRehash(await hashPassword("x", { ...OWASP_COST, passes: 3 }))).toBe(false); // stronger stays
  });

  it("never match a stored value of no known scheme or a malformed one, and take a hash's time to say so", async () => {
    const malformed = [
      "", "plain text", "$argon2i$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaA", "scrypt$",
      "$argon2id$garbage", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA", "scrypt$abc$8$1$c2FsdA$aGFzaA",
    ];
    for (const stored of malformed) {
      expect(await verifyPassword("plain text", stored)).toBe(false);
      expect(needsRehash(stored)).toBe(true);
    }
    // As long as a real check: a cheap refusal would tell these accounts apart by timing.
    const time = async (f: () => Promise<unknown>) => ((t) => f().then(() => performance.now() - t))(performance.now());
    const real = await hashPassword("correct horse");
    const [check, refusal] = [await time(() => verifyPassword("wrong", real)), await time(() => verifyPassword("wrong", "$argon2id$garbage"))];
    expect(refusal).toBeGreaterThan(check / 3);
  });
});
