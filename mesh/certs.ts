// Dev certificate authority for mutual TLS between services.
//
// One CA, and one certificate per service whose SAN carries the service's identity as a SPIFFE-style
// URI (spiffe://shopmesh/<service>) plus the DNS names and loopback addresses it is reached at.
// Every certificate is both a server and a client certificate: each service serves and calls.
// The exception is infrastructure that only serves (nats-server): its certificate is server-only
// and carries no SPIFFE URI, so it can never pass for a mesh identity as a caller.
// Keys are generated on the machine that runs the mesh and never committed (certs/ is git-ignored).
import { webcrypto } from "node:crypto";
import { mkdir, readFile, writeFile, access } from "node:fs/promises";
import { join } from "node:path";
import type * as X509 from "@peculiar/x509";

/**
 * @peculiar/x509, loaded on first use: only issuing certificates needs it, and a service that
 * only reads its certificate files need not carry it (~2.8 MiB of heap per process).
 */
let x509Library: Promise<typeof X509> | undefined;
const loadX509 = () =>
  (x509Library ??= (async () => {
    await import("reflect-metadata"); // @peculiar/x509 resolves its ASN.1 providers through tsyringe, which needs it
    const loaded = await import("@peculiar/x509");
    // A CommonJS package: bundled (dist/), its exports come as the namespace's default.
    const x509 = ("cryptoProvider" in loaded ? loaded : (loaded as unknown as { default: typeof X509 }).default) as typeof X509;
    x509.cryptoProvider.set(webcrypto as unknown as Crypto);
    return x509;
  })());

const KEY_ALG = { name: "ECDSA", namedCurve: "P-256" } as const;
const SIGN_ALG = { name: "ECDSA", hash: "SHA-256" } as const;
const DAY_MS = 86_400_000;

/** The URI SAN naming a service; peers are identified by it. */
export const spiffeId = (service: string): string => `spiffe://shopmesh/${service}`;

/** Extracts the service name from a peer certificate's subjectaltname string (node's format). */
export function serviceFromSan(subjectaltname: string | undefined): string | undefined {
  // A whole SAN entry, anchored: spiffe://shopmesh/gateway.evil must not pass for "gateway".
  const match = /(?:^|, )URI:spiffe:\/\/shopmesh\/([a-z0-9-]+)(?=,|$)/.exec(subjectaltname ?? "");
  return match?.[1];
}

export interface Pem {
  cert: string;
  key: string;
}

async function exportKey(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey("pkcs8", key as webcrypto.CryptoKey);
  return (await loadX509()).PemConverter.encode(der, "PRIVATE KEY");
}

async function newKeys(): Promise<CryptoKeyPair> {
  return (await webcrypto.subtle.generateKey(KEY_ALG, true, ["sign", "verify"])) as CryptoKeyPair;
}

export interface CertificateAuthority extends Pem {
  /** A mesh certificate for `service`, or with `serverOnly` a server certificate for the host names `service` and `extraHosts`. */
  issue(service: string, extraHosts?: string[], opts?: { serverOnly?: boolean }): Promise<Pem>;
}

/** Creates a new certificate authority that can issue service certificates. */
export async function createCa(name = "ShopMesh dev CA"): Promise<CertificateAuthority> {
  const x509 = await loadX509();
  const keys = await newKeys();
  const now = Date.now();
  const caCert = await x509.X509CertificateGenerator.createSelfSigned({
    name: `CN=${name}`,
    keys,
    signingAlgorithm: SIGN_ALG,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 825 * DAY_MS),
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return issuerFrom(x509, caCert, keys, await exportKey(keys.privateKey));
}

/** Everything a service needs for mTLS: the CA to trust, its own certificate and key. */
export interface TlsFiles {
  ca: string;
  cert: string;
  key: string;
  /** The files they were read from, where there are files: connections made later read them again (rotation). */
  paths?: { ca: string; cert: string; key: string };
}

const exists = (path: string) => access(path).then(() => true, () => false);

/**
 * Makes sure `dir` holds a CA and a certificate for each of `services`, creating what is missing.
 * The CA key stays in `dir` so later runs can issue certificates for new services.
 */
export async function ensureCerts(dir: string, services: readonly string[], opts: { serverOnly?: readonly string[] } = {}): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const caCertPath = join(dir, "ca.crt");
  const caKeyPath = join(dir, "ca.key");
  let ca: CertificateAuthority | undefined; // set when this run made a new CA
  if (!(await exists(caCertPath)) || !(await exists(caKeyPath))) {
    ca = await createCa();
    await writeFile(caCertPath, ca.cert);
    await writeFile(caKeyPath, ca.key, { mode: 0o600 });
  }
  let issuer = ca;
  for (const service of services) {
    // Certificates from an earlier CA are useless against a new one: reissue them all.
    if (!ca && (await exists(join(dir, `${service}.crt`)))) continue;
    issuer ??= await loadCa(caCertPath, caKeyPath);
    const pem = await issuer.issue(service, [], { serverOnly: opts.serverOnly?.includes(service) });
    await writeFile(join(dir, `${service}.crt`), pem.cert);
    await writeFile(join(dir, `${service}.key`), pem.key, { mode: 0o600 });
  }
}

async function loadCa(certPath: string, keyPath: string): Promise<CertificateAuthority> {
  const x509 = await loadX509();
  const caCert = new x509.X509Certificate(await readFile(certPath, "utf8"));
  const keyPem = await readFile(keyPath, "utf8");
  const keyDer = x509.PemConverter.decodeFirst(keyPem);
  const privateKey = await webcrypto.subtle.importKey("pkcs8", keyDer, KEY_ALG, true, ["sign"]);
  const publicKey = await caCert.publicKey.export(KEY_ALG, ["verify"]);
  return issuerFrom(x509, caCert, { privateKey, publicKey } as CryptoKeyPair, keyPem);
}

function issuerFrom(x509: typeof X509, caCert: X509.X509Certificate, keys: CryptoKeyPair, keyPem: string): CertificateAuthority {
  return {
    cert: caCert.toString("pem"),
    key: keyPem,
    issue: async (service, extraHosts = [], { serverOnly = false } = {}) => {
      const leafKeys = await newKeys();
      const hosts = ["localhost", service, ...extraHosts];
      const cert = await x509.X509CertificateGenerator.create({
        subject: `CN=${service}`,
        issuer: caCert.subject,
        publicKey: leafKeys.publicKey,
        signingKey: keys.privateKey,
        signingAlgorithm: SIGN_ALG,
        notBefore: new Date(Date.now() - DAY_MS),
        notAfter: new Date(Date.now() + 365 * DAY_MS),
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension(serverOnly ? [x509.ExtendedKeyUsage.serverAuth] : [x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
          new x509.SubjectAlternativeNameExtension([
            ...(serverOnly ? [] : [{ type: "url" as const, value: spiffeId(service) }]),
            ...hosts.map((value) => ({ type: "dns" as const, value })),
            { type: "ip", value: "127.0.0.1" },
            { type: "ip", value: "::1" },
          ]),
          await x509.AuthorityKeyIdentifierExtension.create(keys.publicKey),
        ],
      });
      return { cert: cert.toString("pem"), key: await exportKey(leafKeys.privateKey) };
    },
  };
}

/**
 * Reads a service's TLS files from `dir`: `<service>.crt` and `.key` beside `ca.crt` (`npm run
 * certs`), or, where `dir` holds one identity only, `tls.crt` and `tls.key` (a Kubernetes TLS
 * secret as cert-manager writes it, and the compose setup's per-identity folders).
 */
export async function loadTls(dir: string, service: string): Promise<TlsFiles> {
  const base = (await exists(join(dir, `${service}.crt`))) ? service : "tls";
  const paths = { ca: join(dir, "ca.crt"), cert: join(dir, `${base}.crt`), key: join(dir, `${base}.key`) };
  const read = (path: string) => readFile(path, "utf8");
  return { ca: await read(paths.ca), cert: await read(paths.cert), key: await read(paths.key), paths };
}
