// IdentityService handlers: Register, Login, GetUser, UpdateProfile, GetJwks.
import { randomBytes } from "node:crypto";
import { availableParallelism } from "node:os";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import { v7 as uuidv7 } from "uuid";
import { IdentityService, JwkSchema, Role, UserSchema, type User } from "../../gen/shop/identity/v1/identity_pb.js";
import { UserRegisteredSchema } from "../../gen/shop/identity/v1/events_pb.js";
import { requireSelfOrAdmin } from "../../mesh/rpc/call-scope.js";
import { enqueue } from "../../mesh/events/outbox.js";
import { isUniqueViolation, type Db } from "../../mesh/data/db.js";
import type { Logger } from "../../mesh/telemetry.js";
import { HashingQueue, type QueueLimits } from "./hashing-queue.js";
import { hashPassword, needsRehash, verifyPassword, type HashCost } from "./passwords.js";
import type { Signer } from "./signing-keys.js";
import { createStore, normalizeEmail, type UserRow } from "./store.js";

const ROLE_NAMES: Record<string, Role> = { customer: Role.CUSTOMER, admin: Role.ADMIN };

function toUser(row: UserRow): User {
  return create(UserSchema, {
    id: row.id,
    email: row.email,
    displayName: row.display_name,
    roles: row.roles.map((r) => ROLE_NAMES[r] ?? Role.UNSPECIFIED),
    createTime: timestampFromDate(row.created_at),
    updateTime: timestampFromDate(row.updated_at),
  });
}

// One answer for every failed login, so the API never tells which emails have accounts.
const badCredentials = () => new ConnectError("email or password is incorrect", Code.Unauthenticated);

/** The caller's deadline and cancellation, as the hashing queue takes them. */
function callerLimits(ctx: HandlerContext): QueueLimits {
  const left = ctx.timeoutMs();
  return { signal: ctx.signal, deadline: left === undefined ? undefined : Date.now() + left };
}

/** Time an answer needs to reach the caller after the token is signed. */
export const ANSWER_MARGIN_MS = 25;

/**
 * Stops work (and above all, issuing a token) for a caller who has given up, or whose deadline is
 * so close that the answer would arrive after it.
 */
function stopIfGivenUp(ctx: HandlerContext): number | undefined {
  if (ctx.signal.aborted) throw ConnectError.from(ctx.signal.reason);
  const left = ctx.timeoutMs();
  if (left !== undefined && left < ANSWER_MARGIN_MS) throw new ConnectError("deadline too close to answer in time", Code.DeadlineExceeded);
  return left;
}

export interface IdentityDeps {
  db: Db;
  logger: Logger;
  signer: Signer;
  /** The cost of new password hashes; stored hashes of a lower cost are replaced after a login. */
  hashCost: HashCost;
}

export async function identityHandlers({ db, logger, signer, hashCost }: IdentityDeps): Promise<ServiceImpl<typeof IdentityService>> {
  const store = createStore(db);
  // Unknown emails are checked against this hash so they cost as much time as a wrong password.
  const decoyHash = await hashPassword(randomBytes(16).toString("hex"), hashCost);
  // One hash per core at a time: a burst of sign-ins queues instead of slowing every one down.
  const hashing = new HashingQueue(availableParallelism());

  // A hash of an older scheme or a lower cost is replaced once its password is known, after a
  // successful login has been answered (in the hashing queue's turn, not on the caller's time).
  // Failing to replace it fails nothing: the old hash still verifies, and the next login tries again.
  const rehash = async (row: UserRow, password: string) => {
    try {
      const passwordHash = await hashing.run(() => hashPassword(password, hashCost));
      const replaced = await store.replacePasswordHash(row.id, row.password_hash, passwordHash);
      if (replaced) logger.info({ user_id: row.id }, "password hash upgraded");
      else logger.info({ user_id: row.id }, "password hash not upgraded: it changed meanwhile");
    } catch (err) {
      logger.warn({ err, user_id: row.id }, "password hash not upgraded");
    }
  };

  const notFound = (id: string) => new ConnectError(`user ${id} not found`, Code.NotFound);

  return {
    async register(req, ctx) {
      // Before the transaction: it takes a while.
      const passwordHash = await hashing.run(() => hashPassword(req.password, hashCost), callerLimits(ctx));
      stopIfGivenUp(ctx);
      try {
        // The account and its user.registered event commit together (outbox).
        const row = await db.tx(async (q) => {
          const user = await createStore(q).insert({
            id: uuidv7(),
            email: normalizeEmail(req.email),
            displayName: req.displayName.trim(),
            passwordHash,
            roles: ["customer"],
          });
          enqueue(q, UserRegisteredSchema, {
            userId: user.id,
            email: user.email,
            displayName: user.display_name,
            registerTime: timestampFromDate(user.created_at),
          }, { source: "identity" });
          return user;
        });
        logger.info({ user_id: row.id }, "user registered");
        return { user: toUser(row) };
      } catch (err) {
        if (isUniqueViolation(err)) throw new ConnectError("an account with this email already exists", Code.AlreadyExists);
        throw err;
      }
    },

    async login(req, ctx) {
      const row = await store.byEmail(normalizeEmail(req.email));
      const ok = await hashing.run(() => verifyPassword(req.password, row?.password_hash ?? decoyHash, hashCost), callerLimits(ctx));
      if (!row || !ok) throw badCredentials();
      const left = stopIfGivenUp(ctx); // no token for a caller who has stopped waiting for it
      const { token, expiresAt } = await signer.sign(row.id, row.roles);
      if (needsRehash(row.password_hash, hashCost)) void rehash(row, req.password);
      logger.info({ user_id: row.id, deadline_left_ms: left }, "token issued"); // as it was when the token was decided
      return { accessToken: token, tokenType: "Bearer", expireTime: timestampFromDate(expiresAt), user: toUser(row) };
    },

    async getUser(req, ctx) {
      requireSelfOrAdmin(ctx, req.id);
      const row = await store.byId(req.id);
      if (!row) throw notFound(req.id);
      return { user: toUser(row) };
    },

    async updateProfile(req, ctx) {
      requireSelfOrAdmin(ctx, req.id);
      const row = await store.updateProfile(req.id, req.displayName?.trim());
      if (!row) throw notFound(req.id);
      return { user: toUser(row) };
    },

    async getJwks() {
      const keys = await signer.publicKeys();
      return { keys: keys.map((k) => create(JwkSchema, { kty: k.kty, crv: k.crv, x: k.x, kid: k.kid, alg: k.alg, use: k.use })) };
    },
  };
}

/** Makes sure the configured admin account exists with the configured password. */
export async function ensureAdmin(db: Db, email: string, password: string, hashCost: HashCost): Promise<string> {
  const row = await createStore(db).upsertAdmin({ id: uuidv7(), email: normalizeEmail(email), passwordHash: await hashPassword(password, hashCost) });
  return row!.id;
}
