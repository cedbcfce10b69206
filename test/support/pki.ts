// A throwaway certificate authority per test file: real certificates, real TLS, nothing on disk
// unless a test needs a CERTS_DIR for a whole service.
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCa, type CertificateAuthority, type TlsFiles } from "../../mesh/certs.js";

export interface TestPki {
  ca: CertificateAuthority;
  tls(service: string): Promise<TlsFiles>;
  /** A folder laid out like certs/ (ca.crt, <service>.crt/.key) for the given services. */
  dir(services: string[]): Promise<string>;
}

export async function createTestPki(): Promise<TestPki> {
  const ca = await createCa("ShopMesh test CA");
  const cache = new Map<string, Promise<TlsFiles>>();
  const tls = (service: string) => {
    if (!cache.has(service)) cache.set(service, ca.issue(service).then((pem) => ({ ca: ca.cert, ...pem })));
    return cache.get(service)!;
  };
  return {
    ca,
    tls,
    async dir(services) {
      const dir = await mkdtemp(join(tmpdir(), "shopmesh-certs-"));
      await writeFile(join(dir, "ca.crt"), ca.cert);
      for (const service of services) {
        const files = await tls(service);
        await writeFile(join(dir, `${service}.crt`), files.cert);
        await writeFile(join(dir, `${service}.key`), files.key);
      }
      return dir;
    },
  };
}
