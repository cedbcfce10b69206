// The RPC metrics keep their own children (no label hashing per call) yet must scrape exactly as
// prom-client's Counter and Histogram would for the same observations.
import { afterEach, describe, expect, it, vi } from "vitest";
import { Counter, Histogram, Registry } from "prom-client";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { rpcMetrics } from "../../mesh/telemetry.js";

afterEach(() => vi.restoreAllMocks());

const BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

describe("rpc metrics", () => {
  it("scrape as prom-client's Counter and Histogram, one series per method and code however many clients share the registry", async () => {
    const ours = new Registry();
    ours.setDefaultLabels({ service: "order" });
    const theirs = new Registry();
    theirs.setDefaultLabels({ service: "order" });
    const labelNames = ["grpc_service", "grpc_method", "grpc_code"];
    const handled = new Counter({ name: "grpc_client_handled_total", help: "RPCs completed on the client, by method and status code (after retries).", labelNames, registers: [theirs] });
    const latency = new Histogram({ name: "grpc_client_handling_seconds", help: "Time from the start of a call to its final status on the client.", labelNames, buckets: BUCKETS, registers: [theirs] });

    const [one, two] = [rpcMetrics(ours, "client"), rpcMetrics(ours, "client")];
    let now = 0;
    vi.spyOn(performance, "now").mockImplementation(() => now);
    const calls: [typeof one, keyof typeof IdentityService.method, string, number][] = [
      [one, "getUser", "OK", 0.0004], [two, "getUser", "OK", 0.001], [one, "getUser", "OK", 0.003],
      [two, "getUser", "NotFound", 0.2], [one, "getJwks", "OK", 12], [two, "getJwks", "OK", 10], [one, "getJwks", "Unavailable", 0],
    ];
    for (const [record, method, code, seconds] of calls) {
      const [done, started] = [record(IdentityService.method[method]), now];
      now += seconds * 1000;
      done(code);
      const labels = { grpc_service: IdentityService.typeName, grpc_method: IdentityService.method[method].name, grpc_code: code };
      handled.inc(labels);
      latency.observe(labels, (now - started) / 1000);
    }
    expect(await ours.metrics()).toBe(await theirs.metrics());
    expect(await ours.metrics()).toMatch(/grpc_client_handled_total\{grpc_service="shop.identity.v1.IdentityService",grpc_method="GetUser",grpc_code="OK",service="order"\} 3\n/);
  });
});
