// REST routes straight from the contracts' google.api.http annotations.
import { describe, expect, it } from "vitest";
import { Code, ConnectError } from "@connectrpc/connect";
import { CatalogService } from "../../gen/shop/catalog/v1/catalog_pb.js";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { OrderService } from "../../gen/shop/order/v1/order_pb.js";
import { buildRequest, deriveRoutes, matchRoute, type Match } from "../../gateway/http-rules.js";

const routes = deriveRoutes([IdentityService, CatalogService, OrderService]);
const match = (method: string, path: string) => {
  const m = matchRoute(routes, method, path);
  if (m === "not-found" || "allowed" in m) throw new Error(`no match: ${JSON.stringify(m)}`);
  return m;
};
const id = "0190a000-0000-7000-8000-000000000001";

describe("REST routes from google.api.http", () => {
  it("derives every annotated RPC", () => {
    expect(routes.map((r) => `${r.httpMethod} ${r.template}`)).toEqual(expect.arrayContaining([
      "POST /v1/auth/login", "GET /v1/products/{id}", "GET /v1/products", "POST /v1/orders", "POST /v1/orders/{id}:cancel", "GET /v1/orders/{id}:watch",
    ]));
  });

  it("matches paths, path variables and custom verbs, and tells 404 from 405", () => {
    expect(match("GET", `/v1/products/${id}`).route.method).toBe(CatalogService.method.getProduct);
    expect(match("GET", "/v1/products:batchGet").route.method).toBe(CatalogService.method.batchGetProducts);
    expect(match("POST", `/v1/orders/${id}:cancel`).route.method).toBe(OrderService.method.cancelOrder);
    expect(match("GET", `/v1/orders/${id}:watch`).route.method).toBe(OrderService.method.watchOrder);
    expect(matchRoute(routes, "DELETE", `/v1/products/${id}`)).toEqual({ allowed: ["GET", "PATCH"] });
    expect(matchRoute(routes, "GET", "/v1/nothing")).toBe("not-found");
  });

  it("fills fields from the path, the query string (repeated, typed) and the body", () => {
    const list = buildRequest(match("GET", "/v1/products"), undefined, new URLSearchParams("page_size=5&query=wool&pageToken=abc"));
    expect(list).toMatchObject({ pageSize: 5, query: "wool", pageToken: "abc" });
    const batch = buildRequest(match("GET", "/v1/products:batchGet"), undefined, new URLSearchParams(`ids=${id}&ids=x`));
    expect(batch).toMatchObject({ ids: [id, "x"] });
    const cancel = buildRequest(match("POST", `/v1/orders/${id}:cancel`), { reason: "no" }, new URLSearchParams());
    expect(cancel).toMatchObject({ id, reason: "no" });
    const orders = buildRequest(match("GET", "/v1/orders"), undefined, new URLSearchParams("status=ORDER_STATUS_PENDING"));
    expect(orders).toMatchObject({ status: 1 });
  });

  it("rejects unknown fields, wrong types and bodies where none belongs, naming the problem", () => {
    const fails = (m: Match, body: unknown, query = "") => {
      try {
        buildRequest(m, body as never, new URLSearchParams(query));
      } catch (err) {
        expect(err).toBeInstanceOf(ConnectError);
        expect((err as ConnectError).code).toBe(Code.InvalidArgument);
        return (err as ConnectError).rawMessage;
      }
      throw new Error("accepted");
    };
    expect(fails(match("POST", "/v1/auth/login"), { email: "a@b.co", password: "x", admin: true })).toMatch(/admin/);
    expect(fails(match("GET", "/v1/products"), undefined, "page_size=lots")).toMatch(/pageSize|page_size/);
    expect(fails(match("GET", "/v1/products"), undefined, "colour=red")).toMatch(/unknown field "colour"/);
    expect(fails(match("GET", `/v1/products/${id}`), { x: 1 })).toMatch(/takes no request body/);
    expect(fails(match("POST", "/v1/auth/login"), [1, 2])).toMatch(/JSON object/);
    expect(() => matchRoute(routes, "GET", "/v1/products/%E0%A4%A")).toThrow(/percent-encoding/);
  });
});
