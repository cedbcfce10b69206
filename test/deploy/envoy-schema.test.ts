// The checker the generated Envoy configurations go through: Envoy's API schema, built from the
// protos @grpc/grpc-js-xds ships. It must accept what Envoy accepts and refuse what Envoy refuses.
import { describe, expect, it } from "vitest";
import { checkEnvoyBootstrap } from "../support/envoy-schema.js";

/** A small sidecar: one inbound listener in front of an app on loopback. */
function sidecar(hcmExtra: Record<string, unknown> = {}, routeExtra: Record<string, unknown> = {}) {
  return {
    admin: { address: { socket_address: { address: "127.0.0.1", port_value: 9901 } } },
    static_resources: {
      listeners: [{
        name: "inbound",
        address: { socket_address: { address: "0.0.0.0", port_value: 50051 } },
        filter_chains: [{
          filters: [{
            name: "envoy.filters.network.http_connection_manager",
            typed_config: {
              "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
              stat_prefix: "inbound",
              codec_type: "HTTP2",
              forward_client_cert_details: "SANITIZE_SET",
              set_current_client_cert_details: { uri: true },
              route_config: { virtual_hosts: [{ name: "app", domains: ["*"], routes: [{ match: { prefix: "/" }, route: { cluster: "app", timeout: "0s", ...routeExtra } }] }] },
              http_filters: [{ name: "envoy.filters.http.router", typed_config: { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" } }],
              ...hcmExtra,
            },
          }],
        }],
      }],
      clusters: [{
        name: "app",
        type: "STATIC",
        connect_timeout: "1s",
        load_assignment: { cluster_name: "app", endpoints: [{ lb_endpoints: [{ endpoint: { address: { socket_address: { address: "127.0.0.1", port_value: 60051 } } } }] }] },
      }],
    },
  };
}

describe("Envoy's API schema", () => {
  it("accepts a valid sidecar bootstrap", () => {
    expect(() => checkEnvoyBootstrap(sidecar())).not.toThrow();
  }, 60_000); // the first call builds the schema with buf (~2 s, more on a busy machine)

  it("refuses a misspelt field, even inside a typed_config", () => {
    expect(() => checkEnvoyBootstrap(sidecar({ stat_prefx: "inbound" }))).toThrow(/key "stat_prefx" is unknown/);
  });

  it("refuses an enum value Envoy does not have", () => {
    expect(() => checkEnvoyBootstrap(sidecar({ codec_type: "HTTP9" }))).toThrow(/CodecType from JSON: "HTTP9"/);
    expect(() => checkEnvoyBootstrap(sidecar({ forward_client_cert_details: "SANITISE_SET" }))).toThrow(/ForwardClientCertDetails/);
  });

  it("refuses a duration Envoy cannot read", () => {
    expect(() => checkEnvoyBootstrap(sidecar({}, { timeout: "15 seconds" }))).toThrow(/google.protobuf.Duration from JSON: "15 seconds"/);
  });
});
