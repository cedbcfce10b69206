// The generated Envoy sidecars (envoy/*.yaml; their freshness: generated.test.ts), each
// one accepted by Envoy's API schema, and saying what the topology says: who may call a service,
// which upstreams have an outbound listener, retries at the transport level only, no timeout that
// cuts a long stream, and ports that agree with the app's.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { publicServices } from "../../gateway/upstreams.js";
import { projectRoot } from "../../mesh/project-root.js";
import { serviceNames, sidecar as sidecarPorts, topology, type ServiceName } from "../../mesh/topology.js";
import { SIDECAR_REPLY } from "../../mesh/rpc/transport.js";
import { checkEnvoyBootstrap, checkEnvoyMessage } from "../support/envoy-schema.js";

const committed = (path: string) => readFileSync(join(projectRoot, path), "utf8");
const sidecar = (name: string): any => parse(committed(`envoy/${name}.yaml`));
const listener = (config: any, name: string) => config.static_resources.listeners.find((l: any) => l.name === name);
const manager = (l: any) => l.filter_chains[0].filters[0].typed_config;
const routes = (l: any) => manager(l).route_config.virtual_hosts.flatMap((v: any) => v.routes);
const pub = publicServices.map(([, n]) => n);

describe("generated Envoy sidecars", () => {
  it("are each accepted by Envoy's API schema, SDS secrets included", () => {
    for (const name of [...serviceNames, "gateway"]) expect(() => checkEnvoyBootstrap(sidecar(name)), name).not.toThrow();
    for (const secret of ["tls-certificate", "validation-context"]) {
      const { resources } = parse(committed(`envoy/sds/${secret}.yaml`));
      const { "@type": type, ...body } = resources[0];
      expect(type).toBe("type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret");
      expect(() => checkEnvoyMessage("envoy.extensions.transport_sockets.tls.v3.Secret", body)).not.toThrow();
    }
  }, 60_000);

  it("let in exactly the callers the topology names (RBAC on SPIFFE ids), over mTLS with client certificates", () => {
    const expected: Record<ServiceName, string[]> = { identity: ["gateway"], catalog: ["gateway", "order"], inventory: ["gateway"], order: ["gateway"], payment: ["gateway"], notification: ["gateway"] };
    for (const name of serviceNames) {
      const inbound = listener(sidecar(name), "inbound");
      const rbac = manager(inbound).http_filters.find((f: any) => f.name === "envoy.filters.http.rbac").typed_config.rules;
      expect(rbac.action).toBe("ALLOW");
      expect(rbac.policies.callers.principals.map((p: any) => p.authenticated.principal_name.exact)).toEqual(expected[name].map((c) => `spiffe://shopmesh/${c}`));
      expect(inbound.filter_chains[0].transport_socket.typed_config.require_client_certificate).toBe(true);
      expect(manager(inbound).forward_client_cert_details).toBe("SANITIZE_SET");
    }
    expect(listener(sidecar("gateway"), "inbound")).toBeUndefined(); // the gateway serves :8080 itself
  });

  it("have one outbound listener per upstream, on the upstream's own port, checking its SPIFFE id", () => {
    for (const name of [...serviceNames, "gateway" as const]) {
      const config = sidecar(name);
      const upstreams = name === "gateway" ? pub : [...topology[name].upstreams];
      const outbound = config.static_resources.listeners.filter((l: any) => l.name.startsWith("outbound-"));
      expect(outbound.map((l: any) => [l.name, l.address.socket_address])).toEqual(upstreams.map((u) => [`outbound-${u}`, { address: "127.0.0.1", port_value: topology[u as ServiceName].grpcPort }]));
      for (const u of upstreams) {
        const cluster = config.static_resources.clusters.find((c: any) => c.name === u);
        expect(cluster.transport_socket.typed_config.common_tls_context.combined_validation_context.default_validation_context.match_typed_subject_alt_names).toEqual([{ san_type: "URI", matcher: { exact: `spiffe://shopmesh/${u}` } }]);
        expect(cluster.health_checks[0].grpc_health_check).toEqual({});
        // Ejection for transport failures of the replica only, never for a gRPC status it answered.
        expect(cluster.outlier_detection).toMatchObject({
          split_external_local_origin_errors: true,
          consecutive_local_origin_failure: topology[u as ServiceName].resilience.ejectAfterFailures,
          enforcing_consecutive_local_origin_failure: 100,
          enforcing_consecutive_5xx: 0,
          enforcing_consecutive_gateway_failure: 0,
          enforcing_success_rate: 0,
        });
        expect(cluster.circuit_breakers.thresholds[0].retry_budget).toBeDefined();
      }
    }
  });

  it("retry only at the transport level, and never cut a long stream", () => {
    for (const name of [...serviceNames, "gateway"]) {
      const config = sidecar(name);
      for (const l of config.static_resources.listeners.filter((x: any) => x.name !== "ops")) {
        for (const route of routes(l)) {
          expect(route.route.timeout, `${name} ${l.name}`).toBe("0s");
          expect(route.route.max_stream_duration).toEqual({ grpc_timeout_header_max: "0s" });
          const retryOn = route.route.retry_policy?.retry_on?.split(",") ?? [];
          for (const condition of retryOn) expect(["connect-failure", "refused-stream", "reset-before-request"]).toContain(condition);
          if (l.name === "inbound") expect(route.route.retry_policy).toBeUndefined();
        }
        expect(manager(l).stream_idle_timeout).toBe("3600s");
      }
    }
  });

  it("mark the replies Envoy makes itself with the header the app's clients read, so a failure is never retried in both layers", () => {
    for (const name of [...serviceNames, "gateway"]) {
      for (const l of sidecar(name).static_resources.listeners.filter((x: any) => x.name.startsWith("outbound-"))) {
        const [mapper] = manager(l).local_reply_config.mappers;
        // Only replies to what Envoy retried or shed: a replica dying mid-call (UC, UR) or no
        // healthy host (UH) stays unmarked, for the app to retry when the call allows it.
        expect(mapper.filter).toEqual({ response_flag_filter: { flags: ["UF", "URX", "UO"] } });
        expect(mapper.headers_to_add.map((h: any) => h.header.key)).toEqual([SIDECAR_REPLY]);
      }
    }
  });

  it("put the app on loopback at its port + 10000, and keep the admin interface on loopback", () => {
    for (const name of serviceNames) {
      const config = sidecar(name);
      const app = config.static_resources.clusters.find((c: any) => c.name === "app");
      expect(app.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address).toEqual({ address: "127.0.0.1", port_value: topology[name].grpcPort + sidecarPorts.appPortOffset });
      expect(listener(config, "inbound").address.socket_address).toEqual({ address: "0.0.0.0", port_value: topology[name].grpcPort });
      expect(config.admin.address.socket_address.address).toBe("127.0.0.1");
    }
  });
});
