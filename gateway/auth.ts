// Bearer tokens verified at the edge against identity's public keys (JWKS). The keys are fetched
// from identity's GetJwks once, cached, and fetched again only when a token names a key id we do
// not have (at most once per refresh interval): never per request. Only EdDSA is accepted, so an
// unsigned ("alg": "none") or HMAC-confused token fails before any key is looked at.
import { Code, ConnectError } from "@connectrpc/connect";
import { errors, importJWK, jwtVerify, type CryptoKey, type JWK } from "jose";
import type { IdentityService } from "../gen/shop/identity/v1/identity_pb.js";
import type { EndUser } from "../mesh/rpc/call-scope.js";
import type { MeshClient } from "../mesh/rpc/client.js";
import type { Logger } from "../mesh/telemetry.js";

export interface AuthOptions {
  identity: MeshClient<typeof IdentityService>;
  issuer: string;
  audience: string;
  logger: Logger;
  /** Least time between two JWKS fetches caused by unknown key ids. */
  refreshIntervalMs?: number;
}

export interface Authenticator {
  /** The user a valid bearer token names; undefined without a token; UNAUTHENTICATED for a bad one. */
  authenticate(authorization: string | null | undefined): Promise<EndUser | undefined>;
}

const unauthenticated = (message: string) => new ConnectError(message, Code.Unauthenticated);

function reason(err: unknown): string {
  if (err instanceof errors.JWTExpired) return "the token has expired";
  if (err instanceof errors.JWTClaimValidationFailed) return `the token's ${err.claim} claim is not accepted (${err.reason})`;
  if (err instanceof errors.JOSEAlgNotAllowed) return "the token's signing algorithm is not accepted";
  if (err instanceof errors.JWSSignatureVerificationFailed) return "the token's signature does not verify";
  if (err instanceof errors.JWSInvalid || err instanceof errors.JWTInvalid) return "the token is malformed";
  if (err instanceof ConnectError) return err.rawMessage;
  return "the token is not valid";
}

export function createAuthenticator(opts: AuthOptions): Authenticator {
  const keys = new Map<string, CryptoKey | Uint8Array>();
  let lastFetch = 0;
  let fetching: Promise<void> | undefined;

  const refresh = () =>
    (fetching ??= (async () => {
      try {
        const { keys: jwks } = await opts.identity.getJwks({}, { timeoutMs: 2_000 });
        const fresh = new Map<string, CryptoKey | Uint8Array>();
        for (const k of jwks) fresh.set(k.kid, keys.get(k.kid) ?? (await importJWK({ kty: k.kty, crv: k.crv, x: k.x, alg: k.alg } as JWK, "EdDSA")));
        // The published set is the truth: a key identity stopped publishing is no longer trusted.
        keys.clear();
        for (const [kid, key] of fresh) keys.set(kid, key);
        lastFetch = Date.now();
        opts.logger.info({ keys: keys.size }, "JWKS loaded from identity");
      } finally {
        fetching = undefined;
      }
    })());

  const keyFor = async (kid: string | undefined) => {
    if (!kid) throw unauthenticated("the token names no key (kid)");
    if (!keys.has(kid) && Date.now() - lastFetch >= (opts.refreshIntervalMs ?? 30_000)) {
      await refresh().catch((err) => {
        opts.logger.warn({ err }, "cannot load JWKS from identity");
        throw new ConnectError("cannot verify tokens right now: identity is unreachable", Code.Unavailable);
      });
    }
    const key = keys.get(kid);
    if (!key) throw unauthenticated("the token was signed by an unknown key");
    return key;
  };

  return {
    async authenticate(authorization) {
      if (!authorization) return undefined;
      const match = /^Bearer\s+(\S+)$/i.exec(authorization);
      if (!match) throw unauthenticated("the Authorization header must be: Bearer <token>");
      try {
        const { payload } = await jwtVerify(match[1]!, (header) => keyFor(header.kid), {
          issuer: opts.issuer,
          audience: opts.audience,
          algorithms: ["EdDSA"],
          requiredClaims: ["sub", "exp"],
        });
        const roles = Array.isArray(payload.roles) ? payload.roles.filter((r): r is string => typeof r === "string") : [];
        return { id: payload.sub!, roles };
      } catch (err) {
        if (err instanceof ConnectError && err.code === Code.Unavailable) throw err;
        throw unauthenticated(reason(err));
      }
    },
  };
}
