// The newest update time product.updated has announced for each product, so a cache of catalog's
// answers (the edge's, order's prices) never stores an older copy. Why the generation check alone
// is not enough: catalog answers reads from its own Redis cache and replaces the entry only after
// its commit, while the event may leave right after the commit; a read that begins after the
// invalidation can still bring the old product back from catalog's cache. Such answers are used,
// not stored.
import { fromBinary, type DescField, type DescMethod, type Message } from "@bufbuild/protobuf";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { ProductSchema, type Product } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { ProductUpdatedSchema } from "../../gen/shop/catalog/v1/events_pb.js";
import { eventSubject } from "../events/events.js";

const productUpdated = eventSubject(ProductUpdatedSchema);
const nanos = (t: Timestamp | undefined) => (t ? t.seconds * 1_000_000_000n + BigInt(t.nanos) : 0n);

/** The fields of a response holding products (a product, or a list of them), per method. */
const productFields = new WeakMap<DescMethod, DescField[]>();
function productFieldsOf(method: DescMethod): DescField[] {
  let fields = productFields.get(method);
  if (!fields) productFields.set(method, (fields = method.output.fields.filter((f) => f.message?.typeName === ProductSchema.typeName)));
  return fields;
}

export class ProductFreshness {
  private readonly newest = new Map<string, bigint>();

  /** Remembers at most `limit` products (the most recently announced): updates are rare next to reads. */
  constructor(private readonly limit = 10_000) {}

  /** An invalidating event: product.updated tells its product's update time; others tell nothing here. */
  announced(subject: string, payload: Uint8Array): void {
    if (subject !== productUpdated) return;
    const event = fromBinary(ProductUpdatedSchema, payload);
    const time = nanos(event.updateTime);
    if ((this.newest.get(event.productId) ?? -1n) >= time) return; // events may come out of order
    this.newest.delete(event.productId); // re-inserted last: the oldest announcement goes first
    this.newest.set(event.productId, time);
    if (this.newest.size > this.limit) this.newest.delete(this.newest.keys().next().value!);
  }

  /** False when `product` is older than its latest announcement. */
  freshProduct(product: Product): boolean {
    const floor = this.newest.get(product.id);
    return floor === undefined || nanos(product.updateTime) >= floor;
  }

  /** False when `response` holds a product older than its latest announcement. */
  fresh(method: DescMethod, response: Message): boolean {
    if (this.newest.size === 0) return true;
    for (const field of productFieldsOf(method)) {
      const value = (response as unknown as Record<string, Product | Product[] | undefined>)[field.localName];
      for (const product of Array.isArray(value) ? value : value ? [value] : []) if (!this.freshProduct(product)) return false;
    }
    return true;
  }
}
