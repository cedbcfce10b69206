// The Kubernetes manifests' PostgreSQL login, tried against a real server: a service connects with
// exactly the DATABASE_URL its Deployment carries (its certificate and key, the server verified
// against the mesh CA) through the runtime's own pool, and the pg_hba rules CloudNativePG is given
// refuse another service's certificate and any password. The server here stands in for a
// CloudNativePG instance: TLS with a server certificate from the CA that also verifies clients
// (ssl_ca_file), the generator's rules, then the rule CloudNativePG always puts last.
import { chownSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Deployment } from "kubernetes-models/apps/v1/Deployment";
import { findPostgresBin, startPostgres, type PostgresServer } from "../../launcher/postgres.js";
import { openDb } from "../../mesh/data/db.js";
import type { ServiceName } from "../../mesh/topology.js";
import { mounts, POSTGRES_CLUSTER, POSTGRES_PORT, tlsKeys } from "../../scripts/deploy/k8s-common.js";
import { postgresHbaRules } from "../../scripts/deploy/k8s-postgres.js";
import { APP_CONTAINER, workloadObjects } from "../../scripts/deploy/k8s-workloads.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { freePort } from "../support/ports.js";

/** CloudNativePG's default rule, after the user's: it would take a password from anyone our rules let through. */
const CNPG_LAST_RULE = "host all all all scram-sha-256";
const SERVICE: ServiceName = "identity";
const OTHER: ServiceName = "catalog";
/** A password the service's role still has (as after the password setup this replaced): it must not help. */
const LEFTOVER_PASSWORD = "leftover-password";
/** A role outside our rules, with a password: CloudNativePG's last rule lets it in, so that rule is live here. */
const OUTSIDER = { role: "analyst", password: "analyst-password" };

let pki: TestPki;
let server: PostgresServer;
let clusterDir: string;
let clientsDir: string;

/** The DATABASE_URL of `service`'s Deployment, as generated. */
function manifestDatabaseUrl(service: ServiceName): string {
  const deployment = workloadObjects(service).find((o): o is Deployment => o instanceof Deployment)!;
  const app = deployment.spec!.template.spec!.containers.find((c) => c.name === APP_CONTAINER)!;
  return app.env!.find((e) => e.name === "DATABASE_URL")!.value!;
}

/** That URL with the server on loopback and the certificate folder `certsDir`: nothing else changes. */
function localUrl(service: ServiceName, certsDir: string, opts: { as?: ServiceName } = {}): string {
  const url = manifestDatabaseUrl(service);
  const inCluster = `@${POSTGRES_CLUSTER}-rw:${POSTGRES_PORT}/`;
  expect(url).toContain(inCluster);
  expect(url).toContain(`=${mounts.appCerts}/`);
  const local = url.replace(inCluster, `@127.0.0.1:${server.port}/`).replaceAll(`=${mounts.appCerts}/`, `=${certsDir}/`);
  return opts.as ? local.replace(`//${service}@`, `//${opts.as}@`) : local;
}

/** A folder laid out as the app's CERTS_DIR in a pod (the keys of its cert-manager secret). */
async function certsDirOf(identity: string): Promise<string> {
  const dir = join(clientsDir, identity);
  mkdirSync(dir, { recursive: true });
  const files = await pki.tls(identity);
  writeFileSync(join(dir, tlsKeys.cert), files.cert);
  writeFileSync(join(dir, tlsKeys.key), files.key, { mode: 0o600 });
  writeFileSync(join(dir, tlsKeys.ca), files.ca);
  return dir;
}

/** Connects through the runtime's pool (mesh/data/db.ts) and asks who and where it is. */
async function whoAmI(url: string) {
  const db = await openDb({ url });
  try {
    const [row] = await db.query<{ role: string; database: string; ssl: boolean | null; client_dn: string | null }>(
      "SELECT current_user AS role, current_database() AS database, s.ssl, s.client_dn FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()",
    );
    return row;
  } finally {
    await db.close();
  }
}

/** Readable by the server's user only, as PostgreSQL demands of a key: owned like the cluster's folder. */
function writeServerFile(name: string, content: string, mode = 0o644): string {
  const path = join(clusterDir, name);
  writeFileSync(path, content, { mode });
  const owner = statSync(clusterDir);
  chownSync(path, owner.uid, owner.gid);
  return path;
}

beforeAll(async () => {
  const bin = findPostgresBin();
  if (!bin) throw new Error("PostgreSQL binaries not found: apt-get install postgresql");
  pki = await createTestPki();
  clusterDir = mkdtempSync(join(tmpdir(), "shopmesh-pg-cert-"));
  clientsDir = mkdtempSync(join(tmpdir(), "shopmesh-pg-clients-"));
  const port = await freePort();
  // First as the launcher makes it (trust on loopback), to create the roles and databases.
  server = await startPostgres({ bin, dir: clusterDir, port });
  const admin = new pg.Client({ connectionString: server.url("postgres") });
  await admin.connect();
  try {
    for (const name of [SERVICE, OTHER]) await admin.query(`CREATE ROLE "${name}" LOGIN`);
    await admin.query(`ALTER ROLE "${SERVICE}" PASSWORD '${LEFTOVER_PASSWORD}'`);
    await admin.query(`CREATE ROLE "${OUTSIDER.role}" LOGIN PASSWORD '${OUTSIDER.password}'`);
    for (const name of [SERVICE, OTHER]) await admin.query(`CREATE DATABASE "${name}" OWNER "${name}"`);
    const serverCert = await pki.ca.issue("postgres", ["localhost"], { serverOnly: true });
    const ssl = {
      ssl: "on",
      ssl_cert_file: writeServerFile("server.crt", serverCert.cert),
      ssl_key_file: writeServerFile("server.key", serverCert.key, 0o600),
      // The client CA: the mesh CA, as clientCASecret gives CloudNativePG.
      ssl_ca_file: writeServerFile("client-ca.crt", pki.ca.cert),
    };
    for (const [name, value] of Object.entries(ssl)) await admin.query(`ALTER SYSTEM SET ${name} = '${value}'`);
  } finally {
    await admin.end();
  }
  writeServerFile(join("data", "pg_hba.conf"), [...postgresHbaRules(), CNPG_LAST_RULE].join("\n") + "\n", 0o600);
  // Then as the manifests configure it.
  await server.stop();
  server = await startPostgres({ bin, dir: clusterDir, port });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  for (const dir of [clusterDir, clientsDir]) if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("PostgreSQL login of the Kubernetes manifests (certificate, no password)", () => {
  it("lets a service in with the DATABASE_URL its Deployment carries: its certificate, TLS, its own role and database", async () => {
    const url = localUrl(SERVICE, await certsDirOf(SERVICE));
    expect(new URL(url).password).toBe("");
    expect(await whoAmI(url)).toEqual({ role: SERVICE, database: SERVICE, ssl: true, client_dn: `/CN=${SERVICE}` });
  });

  it("refuses another service's certificate for this database, whichever role it claims", async () => {
    const otherCerts = await certsDirOf(OTHER);
    // Its own database: that certificate is good.
    expect(await whoAmI(localUrl(OTHER, otherCerts))).toMatchObject({ role: OTHER, database: OTHER });
    // As itself, into this service's database: pg_hba turns the role away.
    const asItself = localUrl(SERVICE, otherCerts, { as: OTHER });
    expect(new URL(asItself).username).toBe(OTHER);
    await expect(whoAmI(asItself)).rejects.toThrow(`pg_hba.conf rejects connection for host "127.0.0.1", user "${OTHER}", database "${SERVICE}", SSL encryption`);
    // As this service's role: its certificate's common name is not that role.
    await expect(whoAmI(localUrl(SERVICE, otherCerts))).rejects.toThrow(`certificate authentication failed for user "${SERVICE}"`);
  });

  it("refuses a password login for the service's role, even with the right password, with or without TLS", async () => {
    // TLS with the server verified, but no client certificate: a password is all it brings.
    const caOnly = `sslmode=verify-full&sslrootcert=${await certsDirOf(SERVICE)}/${tlsKeys.ca}`;
    const at = (role: string, password: string, database: string, query: string) =>
      `postgres://${role}:${password}@127.0.0.1:${server.port}/${database}?${query}`;
    // The rule CloudNativePG adds last takes passwords: a role outside ours gets in with one.
    expect(await whoAmI(at(OUTSIDER.role, OUTSIDER.password, SERVICE, caOnly))).toMatchObject({ role: OUTSIDER.role, ssl: true, client_dn: null });
    await expect(whoAmI(at(SERVICE, LEFTOVER_PASSWORD, SERVICE, caOnly))).rejects.toThrow("connection requires a valid client certificate");
    await expect(whoAmI(at(SERVICE, LEFTOVER_PASSWORD, SERVICE, "sslmode=disable")))
      .rejects.toThrow(`pg_hba.conf rejects connection for host "127.0.0.1", user "${SERVICE}", database "${SERVICE}", no encryption`);
  });
});
