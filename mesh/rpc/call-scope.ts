// What travels with a call from one service to the next: its deadline, its request id and who is
// calling. The server adapter opens a scope around each handler; typed clients read it, so a
// handler that calls an upstream propagates the caller's remaining deadline and request id
// without passing anything by hand. The scope is a value in OpenTelemetry's context, beside the
// trace, so one async storage carries both (async-context.ts).
import { createContextKey as createOtelKey, type Context } from "@opentelemetry/api";
import { Code, ConnectError, createContextKey, type HandlerContext } from "@connectrpc/connect";
import { activeContext, installAsyncContext } from "../async-context.js";

export interface CallScope {
  /** Absolute deadline in epoch milliseconds, if the caller set one. */
  deadline?: number;
  requestId: string;
}

installAsyncContext();
const SCOPE = createOtelKey("shopmesh call scope");

/** `ctx` with `scope` as its call scope: a server enters it together with its span (interceptors.ts). */
export const withCallScope = (ctx: Context, scope: CallScope): Context => ctx.setValue(SCOPE, scope);
export const callScopeOf = (ctx: Context): CallScope | undefined => ctx.getValue(SCOPE) as CallScope | undefined;
export const currentCallScope = (): CallScope | undefined => callScopeOf(activeContext());

/** Metadata keys the mesh uses between services. */
export const headers = {
  requestId: "x-request-id",
  userId: "x-shop-user-id",
  userRoles: "x-shop-user-roles",
} as const;

/** An end user acting through the gateway. */
export interface EndUser {
  id: string;
  roles: string[];
}

/** Who is calling: the peer service proven by its mTLS certificate, and the end user it acts for. */
export interface Caller {
  /** Service name from the peer certificate (spiffe://shopmesh/<service>). */
  service: string;
  /**
   * True when the peer is the public edge (the gateway): it only ever speaks for end users, so a
   * call from it without a user is anonymous, never a call with service rights.
   */
  edge: boolean;
  /** The end user, sent only by the edge. */
  user?: EndUser;
}

export const callerKey = createContextKey<Caller | undefined>(undefined, { description: "caller" });

/** The verified caller of the current call. Every call has one: mTLS is mandatory. */
export function callerOf(ctx: HandlerContext): Caller {
  const caller = ctx.values.get(callerKey);
  if (!caller) throw new ConnectError("caller identity unknown", Code.Unauthenticated);
  return caller;
}

export const isAdmin = (caller: Caller): boolean => caller.user?.roles.includes("admin") ?? false;

/** The caller, unless it is an anonymous call through the edge: that is UNAUTHENTICATED everywhere. */
function knownCaller(ctx: HandlerContext): Caller {
  const caller = callerOf(ctx);
  if (caller.edge && !caller.user) throw new ConnectError("sign in required", Code.Unauthenticated);
  return caller;
}

/** A service acting as itself, an admin, or the owner. */
const actsFor = (caller: Caller, ownerId: string) => !caller.user || isAdmin(caller) || caller.user.id === ownerId;

/**
 * Allows the call when it comes from a service on its own behalf, from an admin, or from the user
 * `userId` themselves. An anonymous call through the edge is UNAUTHENTICATED; anything else is
 * PERMISSION_DENIED.
 */
export function requireSelfOrAdmin(ctx: HandlerContext, userId: string): Caller {
  const caller = knownCaller(ctx);
  if (actsFor(caller, userId)) return caller;
  throw new ConnectError("you may only access your own account", Code.PermissionDenied);
}

/**
 * Allows admins (through the edge) and services acting as themselves; an anonymous edge call is
 * UNAUTHENTICATED and a customer PERMISSION_DENIED.
 */
export function requireAdmin(ctx: HandlerContext): Caller {
  const caller = knownCaller(ctx);
  if (!caller.user || isAdmin(caller)) return caller;
  throw new ConnectError("this needs the admin role", Code.PermissionDenied);
}

/**
 * Whether the caller may see a resource owned by `ownerId`: its owner, an admin, or a service
 * acting as itself. An anonymous edge call is UNAUTHENTICATED. Handlers answer NOT_FOUND when
 * this is false, so nobody learns that another user's resource exists.
 */
export function mayAccess(ctx: HandlerContext, ownerId: string): boolean {
  return actsFor(knownCaller(ctx), ownerId);
}

/** The signed-in end user making this call; UNAUTHENTICATED when there is none. */
export function requireUser(ctx: HandlerContext): EndUser {
  const caller = callerOf(ctx);
  if (!caller.user) throw new ConnectError("sign in required: this acts on behalf of a user", Code.Unauthenticated);
  return caller.user;
}

/**
 * Whose records a list call may see: a customer only their own (whatever they ask for); admins
 * and services anyone's, or one user's when `requestedUserId` is given. Anonymous edge calls are
 * UNAUTHENTICATED. Returns the user id to filter by, or undefined for everyone.
 */
export function listScope(ctx: HandlerContext, requestedUserId: string): string | undefined {
  const caller = knownCaller(ctx);
  return caller.user && !isAdmin(caller) ? caller.user.id : requestedUserId || undefined;
}
