// Access tokens: EdDSA (Ed25519) JWTs signed with a key generated on first start and kept in the
// service's database, so every replica and every restart signs with the same key and tokens
// stay valid. GetJwks publishes the public halves; the kid (RFC 7638 thumbprint) picks the key.
import { randomUUID } from "node:crypto";
import { SignJWT, calculateJwkThumbprint, exportJWK, generateKeyPair, importJWK, type JWK } from "jose";
import type { Db } from "../../mesh/data/db.js";

export interface TokenSettings {
  issuer: string;
  audience: string;
  ttlSeconds: number;
}

export interface Signer {
  sign(subject: string, roles: string[]): Promise<{ token: string; expiresAt: Date }>;
  publicKeys(): Promise<JWK[]>;
}

interface KeyRow extends Record<string, unknown> {
  kid: string;
  private_jwk: JWK;
  public_jwk: JWK;
}

const newestKey = (db: Db) =>
  db.query<KeyRow>("SELECT kid, private_jwk, public_jwk FROM signing_keys ORDER BY created_at DESC, kid LIMIT 1");

/** Loads the newest signing key, creating one if the database has none. */
export async function loadSigner(db: Db, settings: TokenSettings): Promise<Signer> {
  let [row] = await newestKey(db);
  if (!row) {
    const { privateKey, publicKey } = await generateKeyPair("EdDSA", { crv: "Ed25519", extractable: true });
    const publicJwk = { ...(await exportJWK(publicKey)), alg: "EdDSA", use: "sig" };
    const kid = await calculateJwkThumbprint(publicJwk);
    // Two replicas starting together may both generate one; both are kept and published.
    await db.query("INSERT INTO signing_keys (kid, private_jwk, public_jwk) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", [
      kid,
      JSON.stringify(await exportJWK(privateKey)),
      JSON.stringify({ ...publicJwk, kid }),
    ]);
    [row] = await newestKey(db);
  }
  const { kid, private_jwk } = row!;
  const key = await importJWK(private_jwk, "EdDSA");
  return {
    async sign(subject, roles) {
      const expiresAt = new Date((Math.floor(Date.now() / 1000) + settings.ttlSeconds) * 1000);
      const token = await new SignJWT({ roles })
        .setProtectedHeader({ alg: "EdDSA", kid, typ: "JWT" })
        .setIssuer(settings.issuer)
        .setAudience(settings.audience)
        .setSubject(subject)
        .setIssuedAt()
        .setExpirationTime(expiresAt)
        .setJti(randomUUID())
        .sign(key);
      return { token, expiresAt };
    },
    async publicKeys() {
      const rows = await db.query<KeyRow>("SELECT public_jwk FROM signing_keys ORDER BY created_at DESC, kid");
      return rows.map((r) => r.public_jwk);
    },
  };
}
