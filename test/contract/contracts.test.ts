// House rules for the contracts that buf lint cannot check.
import { describe, expect, it } from "vitest";
import { getOption, hasOption, type DescService } from "@bufbuild/protobuf";
import { MethodOptions_IdempotencyLevel } from "@bufbuild/protobuf/wkt";
import { http } from "../../gen/google/api/annotations_pb.js";
import { edge } from "../../gen/shop/common/v1/edge_pb.js";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { InventoryService } from "../../gen/shop/inventory/v1/inventory_pb.js";
import { NotificationService } from "../../gen/shop/notification/v1/notification_pb.js";
import { OrderService } from "../../gen/shop/order/v1/order_pb.js";
import { PaymentService } from "../../gen/shop/payment/v1/payment_pb.js";

const services: DescService[] = [IdentityService, CatalogService, InventoryService, OrderService, PaymentService, NotificationService];
const methods = services.flatMap((s) => s.methods);

describe("contracts", () => {
  it("give every RPC the edge serves a REST mapping, and none that it does not serve", () => {
    const name = (m: (typeof methods)[number]) => `${m.parent.name}.${m.name}`;
    expect(methods.filter((m) => hasOption(m, edge) && !hasOption(m, http)).map(name)).toEqual([]);
    expect(methods.filter((m) => !hasOption(m, edge) && hasOption(m, http)).map(name)).toEqual([]);
  });

  it("map the routes the public API promises", () => {
    const route = (m: (typeof methods)[number]) => {
      const rule = getOption(m, http);
      return rule.pattern.case ? `${rule.pattern.case.toUpperCase()} ${rule.pattern.value as string}` : "";
    };
    expect(route(IdentityService.method.login)).toBe("POST /v1/auth/login");
    expect(route(CatalogService.method.getProduct)).toBe("GET /v1/products/{id}");
    expect(route(OrderService.method.createOrder)).toBe("POST /v1/orders");
    expect(getOption(OrderService.method.createOrder, http).body).toBe("*");
  });

  it("mark every unary read as free of side effects, so clients may retry it", () => {
    const reads = methods.filter((m) => m.methodKind === "unary" && /^(Get|List|BatchGet)/.test(m.name));
    expect(reads.length).toBeGreaterThan(8);
    for (const m of reads) expect(m.idempotency, `${m.parent.name}.${m.name}`).toBe(MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS);
  });
});
