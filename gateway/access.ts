// Which RPCs the edge serves, and to whom: read from the contracts' (shop.common.v1.edge) option,
// never listed here. An RPC without it is for the mesh only and is not served at the edge at all.
// The services check every caller again; the edge turns away those who could never succeed
// before their request is read or any service sees it.
import { getOption, hasOption, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { EdgeAccess, edge } from "../gen/shop/common/v1/edge_pb.js";
import type { EndUser } from "../mesh/rpc/call-scope.js";

// Read once per method: getOption decodes the option from the method's descriptor on every call,
// which was ~4 % of the gateway's CPU on an authenticated read (it is asked 2–3 times per request).
const accessByMethod = new WeakMap<DescMethod, EdgeAccess>();

export function edgeAccess(method: DescMethod): EdgeAccess {
  let access = accessByMethod.get(method);
  if (access === undefined) accessByMethod.set(method, (access = hasOption(method, edge) ? getOption(method, edge).access : EdgeAccess.UNSPECIFIED));
  return access;
}

export const servedAtEdge = (method: DescMethod): boolean => edgeAccess(method) !== EdgeAccess.UNSPECIFIED;

/** The RPCs of these services that the edge serves. */
export const edgeMethods = (services: readonly DescService[]): DescMethod[] => services.flatMap((s) => s.methods.filter(servedAtEdge));

/** Throws UNAUTHENTICATED or PERMISSION_DENIED unless `user` may call `method` through the edge. */
export function authorize(method: DescMethod, user: EndUser | undefined): void {
  const access = edgeAccess(method);
  if (access === EdgeAccess.PUBLIC || (access === EdgeAccess.USER && user)) return;
  const name = `${method.parent.name}.${method.name}`;
  if (access === EdgeAccess.UNSPECIFIED) throw new ConnectError(`${name} is not served here`, Code.Unimplemented);
  if (!user) throw new ConnectError(`sign in required: ${name} needs a bearer token`, Code.Unauthenticated);
  if (access === EdgeAccess.ADMIN && !user.roles.includes("admin")) throw new ConnectError(`${name} is for admins only`, Code.PermissionDenied);
}
