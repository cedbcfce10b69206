// The identity service as a real process: configuration errors stop it with one clear line, and
// SIGTERM drains it and exits 0.
import { describe, expect, it } from "vitest";
import { spawn } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { ChildProgress } from "../support/child-progress.js";
import { createTestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";
import { clientFor } from "../support/servers.js";

// One process (node with tsx's loader), so signals reach the service itself.

function run(env: Record<string, string>) {
  const child = spawn(process.execPath, ["--import", "tsx", "services/identity/main.ts"], { env: { ...process.env, LOG_LEVEL: "info", ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  return { child, exited, progress: new ChildProgress(child), out: () => stdout, err: () => stderr };
}

describe("identity process", () => {
  it("refuses a bad variable with one line naming it", async () => {
    const p = run({ PORT: "not-a-port" });
    expect(await p.exited).toBe(78);
    expect(p.err().trim()).toBe('identity: configuration error: PORT must be a port number 0-65535, got "not-a-port"');
  });

  it("serves, then drains and exits 0 on SIGTERM", async () => {
    const pki = await createTestPki();
    const [port, metricsPort] = [await freePort(), await freePort()];
    const p = run({
      PORT: String(port),
      METRICS_PORT: String(metricsPort),
      CERTS_DIR: await pki.dir(["identity"]),
      DATA_DIR: await mkdtemp(join(tmpdir(), "shopmesh-identity-proc-")),
    });
    // However long a busy machine takes: it fails when the process exits or stops making progress.
    await p.progress.waitForLine(/"msg":"serving"/);
    expect(p.out()).toContain(`"msg":"serving"`);

    const client = await clientFor(pki, IdentityService, "identity", [`127.0.0.1:${port}`]);
    expect((await client.getJwks({})).keys).toHaveLength(1);
    const metrics = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    expect(metrics).toContain('grpc_method="GetJwks",grpc_code="OK"');
    client.close();

    p.child.kill("SIGTERM");
    expect(await p.exited).toBe(0);
    expect(p.out()).toContain(`"msg":"stopped"`);
  }, 360_000); // above the progress wait's own safety bound (5 min)
});
