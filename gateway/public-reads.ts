// Which reads the edge answers from its cache: the public unary RPCs of the services whose events
// invalidate it (topology's gateway.cacheInvalidatedBy: catalog's product reads), asked by GET
// with no body and no token. Nothing else: an RPC for signed-in users is never public, and a
// caller who sends a token goes to the service, so nothing the edge caches can depend on who asks.
import { toJson, type DescMethod, type Message } from "@bufbuild/protobuf";
import { EdgeAccess } from "../gen/shop/common/v1/edge_pb.js";
import { gateway, ownerOfSubject, topology } from "../mesh/topology.js";
import { edgeAccess } from "./access.js";
import type { ProductFreshness } from "../mesh/invalidation/product-freshness.js";
import type { InvalidatedCache } from "../mesh/invalidation/invalidated-cache.js";

/** The RPCs whose answers the edge may cache, from the topology and the contracts. */
export function cachedMethods(): Set<DescMethod> {
  const owners = new Set(gateway.cacheInvalidatedBy.map((subject) => ownerOfSubject(subject)!));
  return new Set([...owners].flatMap((name) => topology[name].contract.methods.filter((m) => m.methodKind === "unary" && edgeAccess(m) === EdgeAccess.PUBLIC)));
}

export interface PublicReads {
  /** Whether an anonymous GET of `method` is answered through the cache. */
  covers(method: DescMethod): boolean;
  /** The JSON answer for `key` (the request's path and query): the cached bytes, or `read`'s answer (then stored if still fresh). */
  answer(method: DescMethod, key: string, read: () => Promise<Message>): Promise<Buffer>;
}

export function publicReads(cache: InvalidatedCache<Buffer>, freshness: ProductFreshness): PublicReads {
  const methods = cachedMethods();
  return {
    covers: (method) => methods.has(method),
    async answer(method, key, read) {
      const cached = cache.get(key);
      if (cached) return cached;
      const ticket = cache.begin(); // before the read: an invalidation from here on voids its answer
      const response = await read(); // errors go to the caller, and are never stored
      const body = Buffer.from(JSON.stringify(toJson(method.output, response)));
      cache.store(ticket, key, body, () => freshness.fresh(method, response));
      return body;
    },
  };
}
