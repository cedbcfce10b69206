// Bearer tokens verified at the edge against identity's public keys (JWKS). The keys are fetched
// from identity's GetJwks once, cached, and fetched again only when a token names a key id we do
// not have (at most once per refresh interval): never per request. Only EdDSA is accepted, so an
// unsigned ("alg": "none") or HMAC-confused token fails before any key is looked at.
// A client sends the same token with every request, and verifying it (EdDSA through WebCrypto) was
// the largest single cost of an authenticated request at the edge: a verified token is remembered
// by its exact text until it expires (at most VERIFIED_TTL_MS), and forgotten when the key set changes.
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

const VERIFIED_TTL_MS = 60_000;
const VERIFIED_MAX = 10_000;

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
  /** Tokens verified with the current keys, by their text: the user, and until when. */
  const verified = new Map<string, { user: EndUser; until: number }>();
  /** Bumped when the key set changes: a verification that began with the old set is not remembered. */
  let keySet = 0;
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
        verified.clear();
        keySet++;
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
      const known = verified.get(match[1]!);
      if (known && known.until > Date.now()) return known.user;
      if (known) verified.delete(match[1]!);
      const began = keySet;
      try {
        const { payload } = await jwtVerify(match[1]!, (header) => keyFor(header.kid), {
          issuer: opts.issuer,
          audience: opts.audience,
          algorithms: ["EdDSA"],
          requiredClaims: ["sub", "exp"],
        });
        const roles = Array.isArray(payload.roles) ? payload.roles.filter((r): r is string => typeof r === "string") : [];
        const user = { id: payload.sub!, roles };
        if (began === keySet) {
          if (verified.size >= VERIFIED_MAX) verified.delete(verified.keys().next().value!); // the oldest
          verified.set(match[1]!, { user, until: Math.min(payload.exp! * 1000, Date.now() + VERIFIED_TTL_MS) });
        }
        return user;
      } catch (err) {
        if (err instanceof ConnectError && err.code === Code.Unavailable) throw err;
        throw unauthenticated(reason(err));
      }
    },
  };
}
