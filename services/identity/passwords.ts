// Password hashing with Argon2id (@node-rs/argon2, on libuv's thread pool), a random salt per
// user, in the PHC string format, which carries its own cost parameters: raising them later locks
// no one out, and `needsRehash` tells when a stored hash is below the current policy.
//
// The default cost is OWASP's first recommendation for Argon2id: 19 MiB of memory, 2 passes, 1 lane.
// Memory is what makes each guess dear on a GPU; on these machines a hash takes ~17 ms of CPU, where
// scrypt at N=2^15 (the previous scheme, below OWASP's scrypt minimum of N=2^17) took ~114 ms.
// Hashes of that previous scheme (`scrypt$...`) still verify, and are replaced at the next login.
import { scrypt as scryptCb, timingSafeEqual } from "node:crypto";
import { hash as argon2Hash, parseOptions, verify as argon2Verify } from "@node-rs/argon2";

export interface HashCost {
  /** Memory per hash, in KiB. */
  memoryKiB: number;
  /** Passes over that memory. */
  passes: number;
}

export const OWASP_COST: HashCost = { memoryKiB: 19_456, passes: 2 };

// Unicode passwords are compared in one normal form, so the same password typed on two keyboards matches.
const normalized = (password: string) => password.normalize("NFKC");

/** Hashes a password as an Argon2id PHC string (`$argon2id$v=19$m=…,t=…,p=1$<salt>$<hash>`). */
export function hashPassword(password: string, cost: HashCost = OWASP_COST): Promise<string> {
  return argon2Hash(normalized(password), { memoryCost: cost.memoryKiB, timeCost: cost.passes, parallelism: 1 });
}

/**
 * True when `password` matches `stored`. A stored value of no known scheme, or one that does not
 * parse, never matches, after as long as a hash at `cost` takes: it answers like a wrong password.
 */
export async function verifyPassword(password: string, stored: string, cost: HashCost = OWASP_COST): Promise<boolean> {
  try {
    if (stored.startsWith("$argon2id$")) return await argon2Verify(stored, normalized(password));
    if (stored.startsWith("scrypt$")) return await verifyScrypt(normalized(password), stored);
  } catch {} // malformed: as no scheme
  await hashPassword(password, cost);
  return false;
}

/**
 * True when `stored` is weaker than `cost` (less memory, fewer passes, another variant or version):
 * the next successful login replaces it. A stronger hash stays, so lowering the cost by mistake
 * weakens no one's hash.
 */
export function needsRehash(stored: string, cost: HashCost = OWASP_COST): boolean {
  if (!stored.startsWith("$argon2id$")) return true;
  try {
    const o = parseOptions(stored);
    // version 1 is Argon2 1.3 (0x13); the package's Version enum is a const enum, absent at run time.
    return o.memoryCost < cost.memoryKiB || o.timeCost < cost.passes || o.parallelism !== 1 || o.version !== 1;
  } catch {
    return true;
  }
}

/** The previous scheme, `scrypt$<log2 N>$<r>$<p>$<salt>$<key>` (base64url parts): verified, never written. */
async function verifyScrypt(password: string, stored: string): Promise<boolean> {
  const [, log2N, r, p, salt, expected] = stored.split("$");
  if (!salt || !expected) return false;
  const options = { N: 2 ** Number(log2N), r: Number(r), p: Number(p) };
  const key = await new Promise<Buffer>((resolve, reject) =>
    scryptCb(password, Buffer.from(salt, "base64url"), 32, { ...options, maxmem: 256 * options.N * options.r }, (err, k) =>
      err ? reject(err) : resolve(k),
    ),
  );
  const want = Buffer.from(expected, "base64url");
  return want.length === key.length && timingSafeEqual(key, want);
}
