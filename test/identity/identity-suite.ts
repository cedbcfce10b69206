// Every rule of the identity service, run against each database it supports (PGlite, PostgreSQL).
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Code } from "@connectrpc/connect";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";
import { Role, type IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { headers } from "../../mesh/rpc/call-scope.js";
import type { MeshClient } from "../../mesh/rpc/client.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { scryptHash, startIdentity, type IdentityUnderTest } from "../support/identity.js";
import { rejection } from "../support/servers.js";
import { eventually } from "../support/eventually.js";
import { startNats, type NatsTestServer } from "../support/processes.js";
import type { NatsConnection } from "nats";
import { fromBinary } from "@bufbuild/protobuf";
import { UserRegisteredSchema } from "../../gen/shop/identity/v1/events_pb.js";
import { streamName } from "../../mesh/events/events.js";

export interface DatabaseUnderTest {
  /** Environment for a fresh database; the same value again must reopen the same data. */
  env(): Promise<Record<string, string>>;
  cleanup?(): Promise<void>;
}

const ADMIN = { email: "admin@shop.test", password: "admin-password" };
const asUser = (id: string, roles = "customer") => ({ headers: { [headers.userId]: id, [headers.userRoles]: roles } });

export function identitySuite(name: string, database: DatabaseUnderTest) {
  describe(`identity on ${name}`, () => {
    let pki: TestPki;
    let env: Record<string, string>;
    let svc: IdentityUnderTest;
    let client: MeshClient<typeof IdentityService>;
    let gateway: MeshClient<typeof IdentityService>;

    let nats: NatsTestServer;
    let nc: NatsConnection;

    beforeAll(async () => {
      pki = await createTestPki();
      nats = await startNats(pki);
      nc = await nats.connect();
      env = { ...(await database.env()), ADMIN_EMAIL: ADMIN.email, ADMIN_PASSWORD: ADMIN.password, NATS_URL: nats.url };
      svc = await startIdentity(pki, env);
      client = await svc.client();
      gateway = await svc.client("gateway");
    });
    afterAll(async () => {
      client?.close();
      gateway?.close();
      await svc?.stop();
      await nc?.close();
      await nats?.stop();
      await database.cleanup?.();
    });

    let n = 0;
    const register = (overrides: Partial<{ email: string; password: string; displayName: string }> = {}) =>
      client.register({ email: `user${++n}-${Date.now()}@shop.test`, password: "correct horse", displayName: "Ada", ...overrides });

    it("registers a customer with a UUIDv7 id and lower-cased email", async () => {
      const { user } = await register({ email: "Grace.Hopper@Shop.TEST" });
      expect(user?.id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
      expect(user?.email).toBe("grace.hopper@shop.test");
      expect(user?.roles).toEqual([Role.CUSTOMER]);
      expect(user?.createTime).toBeDefined();
    });

    it("publishes user.registered through the outbox, in the same transaction as the account", async () => {
      await svc.eventing.ready;
      const { user } = await register({ email: "events@shop.test", displayName: "Eve" });
      const jsm = await nc.jetstreamManager();
      const stored = await eventually(
        () => jsm.streams.getMessage(streamName("identity"), { last_by_subj: "shop.user.registered" }).catch(() => undefined),
        (m) => m !== undefined && fromBinary(UserRegisteredSchema, m.data).userId === user!.id,
      );
      expect(stored!.header.get("ce-type")).toBe("shop.identity.v1.UserRegistered");
      expect(stored!.header.get("ce-source")).toBe("identity");
      expect(fromBinary(UserRegisteredSchema, stored!.data)).toMatchObject({ email: "events@shop.test", displayName: "Eve" });

      const before = (await jsm.streams.info(streamName("identity"))).state.messages;
      await rejection(register({ email: "EVENTS@shop.test" })); // duplicate: rolled back, no event
      await new Promise((r) => setTimeout(r, 500));
      expect((await jsm.streams.info(streamName("identity"))).state.messages).toBe(before);
    });

    it("refuses a second account with the same email, whatever its case", async () => {
      await register({ email: "twice@shop.test" });
      const err = await rejection(register({ email: "TWICE@shop.test" }));
      expect(err.code).toBe(Code.AlreadyExists);
    });

    it("rejects an invalid email and a short password with a violation naming each field", async () => {
      const err = await rejection(register({ email: "not-an-email", password: "short" }));
      expect(err.code).toBe(Code.InvalidArgument);
      const [violations] = err.findDetails(ViolationsSchema);
      const fields = violations?.violations.map((v) => [v.field?.elements.map((e) => e.fieldName).join("."), v.ruleId]);
      expect(fields).toEqual([
        ["email", "string.email"],
        ["password", "string.min_len"],
      ]);
    });

    it("logs in with a signed EdDSA token that the JWKS verifies (kid, iss, aud, sub, exp, roles)", async () => {
      const { user } = await register({ email: "login@shop.test" });
      const res = await client.login({ email: "LOGIN@shop.test", password: "correct horse" });
      expect(res.tokenType).toBe("Bearer");
      const jwks = createLocalJWKSet({ keys: (await client.getJwks({})).keys.map(({ kty, crv, x, kid, alg, use }) => ({ kty, crv, x, kid, alg, use })) });
      const { payload, protectedHeader } = await jwtVerify(res.accessToken, jwks, { issuer: "shopmesh-identity", audience: "shopmesh" });
      expect(protectedHeader).toMatchObject({ alg: "EdDSA", typ: "JWT" });
      expect(protectedHeader.kid).toBeTruthy();
      expect(payload.sub).toBe(user?.id);
      expect(payload.roles).toEqual(["customer"]);
      expect(payload.exp! - payload.iat!).toBe(900);
      expect(Number(res.expireTime?.seconds)).toBe(payload.exp);
    });

    it("gives a wrong password and an unknown email the same UNAUTHENTICATED answer", async () => {
      await register({ email: "known@shop.test" });
      const wrongPassword = await rejection(client.login({ email: "known@shop.test", password: "wrong password" }));
      const unknownEmail = await rejection(client.login({ email: "nobody@shop.test", password: "wrong password" }));
      expect(wrongPassword.code).toBe(Code.Unauthenticated);
      expect(unknownEmail.code).toBe(wrongPassword.code);
      expect(unknownEmail.rawMessage).toBe(wrongPassword.rawMessage);
    });

    it("replaces a password hash of the previous scheme (scrypt) at the next successful login, not at a failed one", async () => {
      const { user } = await register({ email: "legacy@shop.test" });
      const legacy = scryptHash("correct horse");
      const stored = async () => (await svc.db.query<{ password_hash: string }>("SELECT password_hash FROM users WHERE id = $1", [user!.id]))[0]!.password_hash;
      await svc.db.query("UPDATE users SET password_hash = $2 WHERE id = $1", [user!.id, legacy]);

      expect((await rejection(client.login({ email: "legacy@shop.test", password: "wrong horse" }))).code).toBe(Code.Unauthenticated);
      expect(await stored()).toBe(legacy);
      expect((await client.login({ email: "legacy@shop.test", password: "correct horse" })).user?.id).toBe(user!.id);
      // Replaced after the answer, in the hashing queue's turn.
      await eventually(stored, (h) => h.startsWith("$argon2id$v=19$m=19456,t=2,p=1$"), 30_000);
      expect((await client.login({ email: "legacy@shop.test", password: "correct horse" })).user?.id).toBe(user!.id);
    });

    it("lets users read and update only their own profile; admins and services any", async () => {
      const { user: ada } = await register();
      const { user: bob } = await register();
      expect((await gateway.getUser({ id: ada!.id }, asUser(ada!.id))).user?.email).toBe(ada!.email);
      expect((await rejection(gateway.getUser({ id: bob!.id }, asUser(ada!.id)))).code).toBe(Code.PermissionDenied);
      expect((await gateway.getUser({ id: bob!.id }, asUser(ada!.id, "customer,admin"))).user?.id).toBe(bob!.id);
      expect((await client.getUser({ id: bob!.id })).user?.id).toBe(bob!.id); // a service, no end user

      const updated = await gateway.updateProfile({ id: ada!.id, displayName: "Ada L." }, asUser(ada!.id));
      expect(updated.user?.displayName).toBe("Ada L.");
      expect((await rejection(gateway.updateProfile({ id: bob!.id, displayName: "x" }, asUser(ada!.id)))).code).toBe(Code.PermissionDenied);
      const unchanged = await gateway.updateProfile({ id: ada!.id }, asUser(ada!.id));
      expect(unchanged.user?.displayName).toBe("Ada L.");
    });

    it("treats a call through the gateway without a user as anonymous, never as a service", async () => {
      const { user } = await register();
      expect((await rejection(gateway.getUser({ id: user!.id }))).code).toBe(Code.Unauthenticated);
      expect((await rejection(gateway.updateProfile({ id: user!.id, displayName: "x" }))).code).toBe(Code.Unauthenticated);
    });

    it("answers NOT_FOUND for an unknown user", async () => {
      const err = await rejection(client.getUser({ id: "018f0000-0000-7000-8000-00000000dead" }));
      expect(err.code).toBe(Code.NotFound);
    });

    it("creates the admin account from ADMIN_EMAIL and ADMIN_PASSWORD", async () => {
      const res = await client.login(ADMIN);
      expect(res.user?.roles).toEqual([Role.CUSTOMER, Role.ADMIN]);
    });

    it("keeps its signing key across restarts, so issued tokens stay valid", async () => {
      const before = await client.login(ADMIN);
      const kidBefore = decodeProtectedHeader(before.accessToken).kid;
      client.close();
      gateway.close();
      await svc.stop();
      svc = await startIdentity(pki, env);
      client = await svc.client();
      gateway = await svc.client("gateway");
      const jwks = await client.getJwks({});
      expect(jwks.keys.map((k) => k.kid)).toContain(kidBefore);
      expect(decodeProtectedHeader((await client.login(ADMIN)).accessToken).kid).toBe(kidBefore);
    });
  });
}
