import { describe, expect, it } from "vitest";
import { X509Certificate } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureCerts } from "../../mesh/certs.js";

const cert = async (dir: string, name: string) => new X509Certificate(await readFile(join(dir, `${name}.crt`)));

describe("dev certificates", () => {
  it("issues one certificate per service from one CA, naming the service in its SAN", async () => {
    const dir = await mkdtemp(join(tmpdir(), "shopmesh-certs-"));
    await ensureCerts(dir, ["identity", "gateway"]);
    const ca = await cert(dir, "ca");
    const identity = await cert(dir, "identity");
    expect(identity.verify(ca.publicKey)).toBe(true);
    expect(identity.subjectAltName).toContain("URI:spiffe://shopmesh/identity");
    expect(identity.checkHost("identity")).toBe("identity");
    expect(identity.checkIP("127.0.0.1")).toBe("127.0.0.1");
  });

  it("keeps what exists, adds what is missing, and reissues everything when the CA is new", async () => {
    const dir = await mkdtemp(join(tmpdir(), "shopmesh-certs-"));
    await ensureCerts(dir, ["identity"]);
    const first = await cert(dir, "identity");
    await ensureCerts(dir, ["identity", "catalog"]);
    expect((await cert(dir, "identity")).fingerprint256).toBe(first.fingerprint256);
    expect((await cert(dir, "catalog")).verify((await cert(dir, "ca")).publicKey)).toBe(true);

    await rm(join(dir, "ca.key"));
    await ensureCerts(dir, ["identity", "catalog"]);
    const ca = await cert(dir, "ca");
    for (const name of ["identity", "catalog"]) expect((await cert(dir, name)).verify(ca.publicKey), name).toBe(true);
  });
});
