// Password hashing with scrypt (node:crypto), a random salt per user, compared in constant time.
// The cost parameters are stored in each hash, so raising them later does not lock anyone out.
import { randomBytes, scrypt as scryptCb, timingSafeEqual, type ScryptOptions } from "node:crypto";

const KEY_LENGTH = 32;

const scrypt = (password: string, salt: Buffer, options: ScryptOptions) =>
  new Promise<Buffer>((resolve, reject) =>
    scryptCb(password.normalize("NFKC"), salt, KEY_LENGTH, { ...options, maxmem: 256 * options.N! * options.r! }, (err, key) =>
      err ? reject(err) : resolve(key),
    ),
  );

/** Hashes a password as `scrypt$<log2 N>$<r>$<p>$<salt>$<key>` (base64url parts). */
export async function hashPassword(password: string, log2N = 15): Promise<string> {
  const salt = randomBytes(16);
  const options = { N: 2 ** log2N, r: 8, p: 1 };
  const key = await scrypt(password, salt, options);
  return ["scrypt", log2N, options.r, options.p, salt.toString("base64url"), key.toString("base64url")].join("$");
}

/** True when `password` matches `stored`; takes the same time whether or not it matches. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, log2N, r, p, salt, expected] = stored.split("$");
  if (scheme !== "scrypt" || !salt || !expected) return false;
  const key = await scrypt(password, Buffer.from(salt, "base64url"), { N: 2 ** Number(log2N), r: Number(r), p: Number(p) });
  const want = Buffer.from(expected, "base64url");
  return want.length === key.length && timingSafeEqual(key, want);
}
