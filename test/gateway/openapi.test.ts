// The generated OpenAPI document is valid OpenAPI 3.1 and describes what the gateway serves.
import { describe, expect, it } from "vitest";
import { Validator } from "@seriousme/openapi-schema-validator";
import { openapiDocument } from "../../gateway/openapi.js";
import { publicServices } from "../../gateway/upstreams.js";

const document = openapiDocument(publicServices.map(([s]) => s)) as Record<string, any>;

describe("OpenAPI document", () => {
  it("is valid against the OpenAPI 3.1 schema", async () => {
    const validator = new Validator();
    const result = await validator.validate(structuredClone(document));
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
    expect(validator.version).toBe("3.1");
  });

  it("has the routes, parameters, schemas and security of the contracts", () => {
    expect(Object.keys(document.paths)).toEqual(expect.arrayContaining(["/v1/products/{id}", "/v1/orders", "/v1/auth/login", "/v1/orders/{id}:cancel"]));
    const getProduct = document.paths["/v1/products/{id}"].get;
    expect(getProduct.parameters).toContainEqual(expect.objectContaining({ name: "id", in: "path", required: true }));
    expect(getProduct.security).toBeUndefined(); // browsing needs no token
    expect(document.paths["/v1/orders"].post.security).toEqual([{ bearerAuth: [] }]);
    expect(document.paths["/v1/products"].get.parameters.map((p: { name: string }) => p.name)).toEqual(expect.arrayContaining(["pageSize", "pageToken", "query", "category"]));
    const money = document.components.schemas["shop.common.v1.Money"];
    expect(money.properties.amountMinor).toMatchObject({ type: "string", format: "int64" });
    expect(document.components.schemas["shop.order.v1.OrderStatus"].enum).toContain("ORDER_STATUS_CONFIRMED");
  });
});
