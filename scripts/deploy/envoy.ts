// The Envoy sidecar of each service and of the gateway, derived from the topology (written to
// envoy/<name>.yaml by `npm run deploy:gen`). The port plan is the same in every pod or compose
// network namespace:
//   inbound mTLS        0.0.0.0:<grpcPort>             callers' addresses do not change
//   the app (h2c)       127.0.0.1:<grpcPort + 10000>
//   outbound, per upstream 127.0.0.1:<upstream grpcPort>  so <UP>_ADDRESSES defaults keep working
//   admin               127.0.0.1:9901 only
//   ops                 0.0.0.0:15021: /ready, /stats/prometheus, gRPC health passed to the app
// Retries: only at the transport level here (a connection refused, a stream reset before the
// request went out). Status-based, idempotency-aware retries stay in the app, which sees the
// idempotency key; retrying in both layers would multiply attempts.
import { spiffeId } from "../../mesh/certs.js";
import { SIDECAR_APP_HOST, SIDECAR_REPLY } from "../../mesh/rpc/transport.js";
import { appPort, serviceNames, sidecar, topology, type ServiceName } from "../../mesh/topology.js";

const { adminPort: ADMIN_PORT, opsPort: OPS_PORT } = sidecar;
/** Where the certificates and the SDS files that name them are mounted in the sidecar. */
export const SDS_DIR = "/etc/envoy/sds";

type Json = Record<string, unknown>;

const address = (host: string, port: number) => ({ socket_address: { address: host, port_value: port } });
const any = (type: string, value: Json) => ({ "@type": `type.googleapis.com/${type}`, ...value });
const routerFilter = { name: "envoy.filters.http.router", typed_config: any("envoy.extensions.filters.http.router.v3.Router", {}) };
const sdsSecret = (name: string) => ({ name, sds_config: { path_config_source: { path: `${SDS_DIR}/${name}.yaml`, watched_directory: { path: SDS_DIR } }, resource_api_version: "V3" } });

/** Who may call `name`: the gateway for services with edge RPCs, and every service that lists it as an upstream. */
export function callersOf(name: ServiceName, publicServices: readonly ServiceName[]): string[] {
  const callers = serviceNames.filter((other) => (topology[other].upstreams as readonly string[]).includes(name));
  return [...(publicServices.includes(name) ? ["gateway"] : []), ...callers];
}

/**
 * Requests in flight per cluster. Long streams count too (a WatchOrder holds one for minutes), so
 * the bound is well above Envoy's default of 1024, where unary calls would start to be shed.
 */
const requestLimits = { priority: "DEFAULT", max_connections: 1024, max_pending_requests: 1024, max_requests: 16_384 };

/** HTTP/2 to a cluster, with keepalive pings so a dead peer is noticed. */
const http2Options = any("envoy.extensions.upstreams.http.v3.HttpProtocolOptions", {
  explicit_http_config: { http2_protocol_options: { connection_keepalive: { interval: "30s", timeout: "10s" } } },
});

/** A gRPC route that never cuts a long stream (WatchOrder): no route timeout, no idle cut under an hour. */
const grpcRoute = (cluster: string, extra: Json = {}) => ({
  match: { prefix: "/" },
  route: { cluster, timeout: "0s", max_stream_duration: { grpc_timeout_header_max: "0s" }, ...extra },
});

function connectionManager(statPrefix: string, routes: Json[], filters: Json[], extra: Json = {}) {
  return {
    name: "envoy.filters.network.http_connection_manager",
    typed_config: any("envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", {
      stat_prefix: statPrefix,
      codec_type: "HTTP2",
      stream_idle_timeout: "3600s",
      route_config: { virtual_hosts: [{ name: statPrefix, domains: ["*"], routes }] },
      http_filters: [...filters, routerFilter],
      ...extra,
    }),
  };
}

function inboundListener(name: ServiceName, callers: readonly string[]) {
  const port = topology[name].grpcPort;
  const rbac = {
    name: "envoy.filters.http.rbac",
    typed_config: any("envoy.extensions.filters.http.rbac.v3.RBAC", {
      rules: {
        action: "ALLOW",
        policies: {
          callers: {
            permissions: [{ any: true }],
            principals: callers.map((caller) => ({ authenticated: { principal_name: { exact: spiffeId(caller) } } })),
          },
        },
      },
    }),
  };
  return {
    name: "inbound",
    address: address("0.0.0.0", port),
    filter_chains: [{
      filters: [connectionManager("inbound", [grpcRoute("app")], [rbac], {
        // The app sees exactly one XFCC element: By=<itself>;Hash=…;URI=<the caller>.
        forward_client_cert_details: "SANITIZE_SET",
        set_current_client_cert_details: { uri: true },
      })],
      transport_socket: {
        name: "envoy.transport_sockets.tls",
        typed_config: any("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", {
          require_client_certificate: true,
          common_tls_context: {
            alpn_protocols: ["h2"],
            tls_certificate_sds_secret_configs: [sdsSecret("tls-certificate")],
            combined_validation_context: {
              default_validation_context: { match_typed_subject_alt_names: [{ san_type: "URI", matcher: { prefix: "spiffe://shopmesh/" } }] },
              validation_context_sds_secret_config: sdsSecret("validation-context"),
            },
          },
        }),
      },
    }],
  };
}

function outboundListener(upstream: ServiceName) {
  return {
    name: `outbound-${upstream}`,
    address: address("127.0.0.1", topology[upstream].grpcPort),
    filter_chains: [{
      filters: [connectionManager(`outbound_${upstream}`, [grpcRoute(upstream, {
        retry_policy: {
          retry_on: "connect-failure,refused-stream,reset-before-request",
          num_retries: 2,
          retry_host_predicate: [{ name: "envoy.retry_host_predicates.previous_hosts", typed_config: any("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate", {}) }],
          retry_back_off: { base_interval: "0.025s", max_interval: "0.250s" },
        },
      })], [], {
        // Marks a reply Envoy made itself (the upstream unreachable after these retries, or the
        // call shed), so the app does not retry it again (mesh/rpc/client.ts).
        local_reply_config: {
          mappers: [{
            // Only what Envoy retried (a connection failure, retries exhausted) or shed (overflow).
            // A replica dying mid-call (UC, UR) or no healthy host (UH) Envoy did not retry: the
            // app may, so those replies stay unmarked.
            filter: { response_flag_filter: { flags: ["UF", "URX", "UO"] } },
            headers_to_add: [{ header: { key: SIDECAR_REPLY, value: "%RESPONSE_FLAGS%" }, append_action: "OVERWRITE_IF_EXISTS_OR_ADD" }],
          }],
        },
      })],
    }],
  };
}

function upstreamCluster(upstream: ServiceName) {
  const { resilience } = topology[upstream];
  return {
    name: upstream,
    type: "STRICT_DNS",
    dns_lookup_family: "V4_ONLY",
    connect_timeout: "1s",
    lb_policy: "LEAST_REQUEST",
    load_assignment: { cluster_name: upstream, endpoints: [{ lb_endpoints: [{ endpoint: { address: address(upstream, topology[upstream].grpcPort) } }] }] },
    typed_extension_protocol_options: { "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2Options },
    transport_socket: {
      name: "envoy.transport_sockets.tls",
      typed_config: any("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", {
        sni: upstream,
        common_tls_context: {
          alpn_protocols: ["h2"],
          tls_certificate_sds_secret_configs: [sdsSecret("tls-certificate")],
          combined_validation_context: {
            default_validation_context: { match_typed_subject_alt_names: [{ san_type: "URI", matcher: { exact: spiffeId(upstream) } }] },
            validation_context_sds_secret_config: sdsSecret("validation-context"),
          },
        },
      }),
    },
    health_checks: [{ timeout: "1s", interval: "5s", unhealthy_threshold: 2, healthy_threshold: 1, grpc_health_check: {} }],
    circuit_breakers: { thresholds: [{ ...requestLimits, retry_budget: { budget_percent: { value: 20 }, min_retry_concurrency: 3 } }] },
    // Ejects a replica only for failures of the replica itself, seen at the transport: connections
    // refused or reset, timeouts. Not for gRPC statuses: Envoy reads a trailers-only status (how
    // grpc-js answers every error) as a 5xx, so five INTERNALs, or five UNAVAILABLEs relayed from
    // further down, would eject a healthy replica; the app's breaker already tells those apart.
    outlier_detection: {
      split_external_local_origin_errors: true,
      consecutive_local_origin_failure: resilience.ejectAfterFailures,
      enforcing_consecutive_local_origin_failure: 100,
      enforcing_consecutive_5xx: 0,
      enforcing_consecutive_gateway_failure: 0,
      enforcing_success_rate: 0,
      enforcing_local_origin_success_rate: 0,
      interval: "5s",
      base_ejection_time: `${resilience.ejectForSeconds}s`,
      max_ejection_percent: 50,
    },
  };
}

function appCluster(port: number) {
  return {
    name: "app",
    type: "STATIC",
    connect_timeout: "1s",
    circuit_breakers: { thresholds: [requestLimits] },
    load_assignment: { cluster_name: "app", endpoints: [{ lb_endpoints: [{ endpoint: { address: address(SIDECAR_APP_HOST, port) } }] }] },
    typed_extension_protocol_options: { "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": http2Options },
  };
}

/** /ready and /stats/prometheus from the admin interface, and the app's gRPC health, on the ops port. */
function opsListener(hasApp: boolean) {
  const admin = (path: string) => ({ match: { path }, route: { cluster: "admin" } });
  const routes = [
    admin("/ready"),
    admin("/stats/prometheus"),
    ...(hasApp ? [{ match: { prefix: "/grpc.health.v1.Health/" }, route: { cluster: "app", timeout: "2s" } }] : []),
  ];
  // Probes speak HTTP/1.1, gRPC probes HTTP/2.
  return { name: "ops", address: address("0.0.0.0", OPS_PORT), filter_chains: [{ filters: [connectionManager("ops", routes, [], { codec_type: "AUTO" })] }] };
}

const adminCluster = {
  name: "admin",
  type: "STATIC",
  connect_timeout: "1s",
  load_assignment: { cluster_name: "admin", endpoints: [{ lb_endpoints: [{ endpoint: { address: address("127.0.0.1", ADMIN_PORT) } }] }] },
};

/**
 * The sidecar of a service (inbound + outbound) or of the gateway (outbound only). `extraCallers`
 * are let in besides the topology's callers (the dev overlay's CLI identity, `client`).
 */
export function envoyConfig(name: ServiceName | "gateway", publicServices: readonly ServiceName[], extraCallers: readonly string[] = []): Json {
  const upstreams = (name === "gateway" ? publicServices : (topology[name].upstreams as readonly ServiceName[])) as readonly ServiceName[];
  const app = name === "gateway" ? undefined : appPort(name, "sidecar");
  return {
    node: { id: name, cluster: name },
    admin: { address: address("127.0.0.1", ADMIN_PORT) },
    layered_runtime: {
      layers: [{
        name: "static",
        // A timeout Envoy's router enforces answers DEADLINE_EXCEEDED, not UNAVAILABLE (which apps
        // retry); from Envoy 1.38. These routes set none (the caller's grpc-timeout bounds each
        // stream), so this only keeps a route timeout added later honest.
        static_layer: { "envoy.reloadable_features.grpc_timeout_returns_deadline_exceeded": true },
      }],
    },
    static_resources: {
      listeners: [
        ...(name === "gateway" ? [] : [inboundListener(name, [...callersOf(name, publicServices), ...extraCallers])]),
        ...upstreams.map(outboundListener),
        opsListener(app !== undefined),
      ],
      clusters: [...(app === undefined ? [] : [appCluster(app)]), ...upstreams.map(upstreamCluster), adminCluster],
    },
  };
}

/** The two SDS files every sidecar reads: its certificate and key, and the mesh CA. Rotation = new files. */
export function sdsFiles(certDir: string): Record<string, Json> {
  const resource = (secret: Json) => ({ resources: [{ "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret", ...secret }] });
  return {
    "tls-certificate": resource({ name: "tls-certificate", tls_certificate: { certificate_chain: { filename: `${certDir}/tls.crt` }, private_key: { filename: `${certDir}/tls.key` } } }),
    "validation-context": resource({ name: "validation-context", validation_context: { trusted_ca: { filename: `${certDir}/ca.crt` } } }),
  };
}
