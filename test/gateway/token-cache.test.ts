// The edge remembers verified tokens (verification was the largest cost of an authenticated
// request), and that must change nothing about which tokens pass: an accepted token is refused once
// it expires; a token signed with a key identity no longer publishes is refused once the gateway
// has the new key set; a token that differs in any byte is verified on its own. Identity is a real
// mTLS gRPC server whose JWKS the test sets; the tokens are signed by the test.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey } from "jose";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { createAuthenticator, type Authenticator } from "../../gateway/auth.js";
import { createTestPki } from "../support/pki.js";
import { clientFor, rejection, silentLogger, startServer, type StubServer } from "../support/servers.js";
import { eventually } from "../support/eventually.js";

type Key = { kid: string; privateKey: CryptoKey; jwk: { kty: string; crv: string; x: string; kid: string; alg: string } };
const newKey = async (kid: string): Promise<Key> => {
  const { publicKey, privateKey } = await generateKeyPair("EdDSA", { crv: "Ed25519" });
  const { kty, crv, x } = await exportJWK(publicKey);
  return { kid, privateKey, jwk: { kty: kty!, crv: crv!, x: x!, kid, alg: "EdDSA" } };
};
const sign = (key: Key, expiresAt: number, sub = "user-1") =>
  new SignJWT({ roles: ["customer"] }).setProtectedHeader({ alg: "EdDSA", kid: key.kid }).setSubject(sub)
    .setIssuer("shopmesh-identity").setAudience("shopmesh").setExpirationTime(expiresAt).sign(key.privateKey);

let identity: StubServer;
let auth: Authenticator;
let published: Key[] = [];
const inAMinute = () => Math.floor(Date.now() / 1000) + 60;

beforeAll(async () => {
  const pki = await createTestPki();
  identity = await startServer(pki, "identity", IdentityService, { getJwks: () => ({ keys: published.map((k) => k.jwk) }) });
  const client = await clientFor(pki, IdentityService, "identity", [identity.address], { as: "gateway" });
  auth = createAuthenticator({ identity: client, issuer: "shopmesh-identity", audience: "shopmesh", logger: silentLogger, refreshIntervalMs: 0 });
}, 30_000);
afterAll(async () => {
  await identity?.drain();
});

describe("edge: verified tokens remembered", () => {
  it("still refuses a token once it has expired", async () => {
    const key = await newKey("k-expiry");
    published = [key];
    const token = await sign(key, Math.floor(Date.now() / 1000) + 2);
    expect(await auth.authenticate(`Bearer ${token}`)).toEqual({ id: "user-1", roles: ["customer"] });
    expect(await auth.authenticate(`Bearer ${token}`)).toEqual({ id: "user-1", roles: ["customer"] });
    const refused = await eventually(() => auth.authenticate(`Bearer ${token}`).then(() => "accepted", (err: Error) => err.message), (r) => r !== "accepted");
    expect(refused).toMatch(/expired/);
  });

  it("refuses a token of a key identity stopped publishing, once the gateway has the new key set", async () => {
    const [old, next] = [await newKey("k-old"), await newKey("k-new")];
    published = [old];
    const oldToken = await sign(old, inAMinute());
    await auth.authenticate(`Bearer ${oldToken}`);
    expect(await auth.authenticate(`Bearer ${oldToken}`)).toMatchObject({ id: "user-1" });
    published = [next]; // rotated, the old key withdrawn
    expect(await auth.authenticate(`Bearer ${await sign(next, inAMinute())}`)).toMatchObject({ id: "user-1" }); // fetches the new set
    expect((await rejection(auth.authenticate(`Bearer ${oldToken}`))).rawMessage).toMatch(/unknown key/);
  });

  it("verifies a token that differs from an accepted one in any byte on its own", async () => {
    const key = await newKey("k-tamper");
    published = [key];
    const token = await sign(key, inAMinute());
    await auth.authenticate(`Bearer ${token}`);
    const [header, payload, signature] = token.split(".");
    const claims = JSON.parse(Buffer.from(payload!, "base64url").toString());
    const tampered = `${header}.${Buffer.from(JSON.stringify({ ...claims, roles: ["admin"] })).toString("base64url")}.${signature}`;
    expect((await rejection(auth.authenticate(`Bearer ${tampered}`))).rawMessage).toMatch(/signature/);
  });
});
