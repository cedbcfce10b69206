// The topology is the one description of the mesh: each service's contract is named for it, the
// gateway's public services come from it, and a service definition cannot drift from it.
import { describe, expect, it } from "vitest";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { publicServices } from "../../gateway/upstreams.js";
import { startService } from "../../mesh/service.js";
import { serviceNames, topology } from "../../mesh/topology.js";
import { catalog } from "../../services/catalog/catalog.js";

describe("topology", () => {
  it("gives each service the contract of its own package", () => {
    for (const name of serviceNames) {
      expect(topology[name].contract.typeName).toBe(`shop.${name}.v1.${name[0]!.toUpperCase()}${name.slice(1)}Service`);
    }
  });

  it("is where the gateway's public services come from: those with an RPC served at the edge", () => {
    expect(publicServices.map(([contract, name]) => [contract.typeName, name])).toEqual(serviceNames.map((name) => [topology[name].contract.typeName, name]));
  });

  it("refuses a service definition whose contract is not the topology's", async () => {
    await expect(startService({ ...catalog, service: IdentityService } as unknown as typeof catalog, {})).rejects.toThrow(
      "catalog serves shop.identity.v1.IdentityService, but the topology gives it shop.catalog.v1.CatalogService",
    );
  });
});
