// A throwaway certificate authority per test file: real certificates, real TLS, nothing on disk
// unless a test needs a CERTS_DIR for a whole service. Like a mesh, a test file has one CA
// (vitest runs each file in its own worker): every createTestPki() in it returns the same, so the
// nats-server, services and clients a test starts through different helpers trust each other.
import { mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { webcrypto } from "node:crypto";
import "reflect-metadata"; // @peculiar/x509 resolves its ASN.1 providers through tsyringe, which needs it
import * as x509 from "@peculiar/x509";
import { createCa, type CertificateAuthority, type TlsFiles } from "../../mesh/certs.js";

x509.cryptoProvider.set(webcrypto as unknown as Crypto);

export interface TestPki {
  ca: CertificateAuthority;
  tls(service: string): Promise<TlsFiles>;
  /** A folder laid out like certs/ (ca.crt, <service>.crt/.key) for the given services. */
  dir(services: string[]): Promise<string>;
  /** A certificate from this CA whose SAN names no ShopMesh service (a stray workload's). */
  stray(): Promise<TlsFiles>;
}

const EC = { name: "ECDSA", namedCurve: "P-256" } as const;

async function issueStray(ca: CertificateAuthority): Promise<TlsFiles> {
  const caKey = await webcrypto.subtle.importKey("pkcs8", x509.PemConverter.decodeFirst(ca.key), EC, false, ["sign"]);
  const keys = (await webcrypto.subtle.generateKey(EC, true, ["sign", "verify"])) as CryptoKeyPair;
  const cert = await x509.X509CertificateGenerator.create({
    subject: "CN=stray",
    issuer: new x509.X509Certificate(ca.cert).subject,
    publicKey: keys.publicKey,
    signingKey: caKey as CryptoKey,
    signingAlgorithm: { name: "ECDSA", hash: "SHA-256" },
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 86_400_000),
    extensions: [
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: "dns", value: "localhost" }, { type: "url", value: "spiffe://elsewhere/stray" }]),
    ],
  });
  const der = await webcrypto.subtle.exportKey("pkcs8", keys.privateKey as webcrypto.CryptoKey);
  return { ca: ca.cert, cert: cert.toString("pem"), key: x509.PemConverter.encode(der, "PRIVATE KEY") };
}

let shared: Promise<TestPki> | undefined;

export const createTestPki = (): Promise<TestPki> => (shared ??= newTestPki());

async function newTestPki(): Promise<TestPki> {
  const ca = await createCa("ShopMesh test CA");
  const cache = new Map<string, Promise<TlsFiles>>();
  const tls = (service: string) => {
    if (!cache.has(service)) cache.set(service, ca.issue(service).then((pem) => ({ ca: ca.cert, ...pem })));
    return cache.get(service)!;
  };
  return {
    ca,
    tls,
    stray: () => issueStray(ca),
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
