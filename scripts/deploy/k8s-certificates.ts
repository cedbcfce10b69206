// cert-manager objects: a self-signed bootstrap Issuer signs the mesh CA, whose Issuer signs one
// certificate per identity with its SPIFFE id as URI SAN (the identity Envoy's RBAC, the app and
// NATS's verify_and_map check) and its name as common name (the PostgreSQL role it logs in as:
// k8s-postgres.ts), nats-server's server certificates, and PostgreSQL's server and replication
// certificates.
//
// Rotation: cert-manager renews each certificate `renewBefore` its end and rewrites its secret.
// Envoy watches its SDS directory and loads the new one in place (k8s-workloads.ts); nats-server's
// chart runs a config reloader that reloads it; CloudNativePG reloads PostgreSQL's (their secrets
// carry its reload label). The app uses its certificate for NATS and PostgreSQL (mesh calls go
// through Envoy) and reads the files again for each new connection to either, so a renewed
// certificate is taken up without a restart.
import { Certificate } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Certificate";
import { Issuer } from "@kubernetes-models/cert-manager/cert-manager.io/v1/Issuer";
import { spiffeId } from "../../mesh/certs.js";
import { certificateHolders, natsServerIdentity } from "../../mesh/topology.js";
import { meta, NAMESPACE, natsChart, POSTGRES_CLUSTER, tlsSecret } from "./k8s-common.js";

const SELF_SIGNED = "shopmesh-selfsigned";
export const CA_ISSUER = "shopmesh-ca";
export const CA_SECRET = "shopmesh-ca";
/**
 * A week, renewed with a third left: everything reads a renewed certificate without a restart
 * (Envoy through SDS, the apps' NATS and PostgreSQL connections from the files at each new
 * connection, nats-server through the chart's reloader, CloudNativePG through cnpg.io/reload),
 * so short lifetimes cost nothing, and two days leave room for cert-manager to be down.
 */
export const certificateLifetime = { duration: "168h", renewBefore: "56h" } as const;

/** Who holds a certificate in the cluster: every identity but the CLI's `client` (the dev overlay adds it). */
export const clusterIdentities = certificateHolders.filter((holder) => holder !== "client");

/** A Service's names in the cluster, short to fully qualified. */
export const serviceDnsNames = (service: string) => [service, `${service}.${NAMESPACE}.svc`, `${service}.${NAMESPACE}.svc.cluster.local`];

/** The NATS cluster's route connections go to <pod>.<headless service>: one certificate for all pods. */
export const natsRoutesIdentity = `${natsChart.release}-routes`;
const natsHeadless = `${natsChart.release}-headless`;
export const postgresServerIdentity = `${POSTGRES_CLUSTER}-server`;
/** CloudNativePG's standbys stream from the primary as the role streaming_replica, by certificate. */
export const postgresReplicationIdentity = `${POSTGRES_CLUSTER}-replication`;
export const POSTGRES_REPLICATION_ROLE = "streaming_replica";
/** CloudNativePG reloads PostgreSQL when a secret with this label changes (a renewed certificate). */
const cnpgReload = { labels: { "cnpg.io/reload": "true" } };

const issuerRef = { name: CA_ISSUER, kind: "Issuer" };
const privateKey = { algorithm: "ECDSA", size: 256, rotationPolicy: "Always" } as const;

/** A mesh identity's certificate: client and server, its SPIFFE id, the DNS names of its Service. */
export function identityCertificate(identity: string): Certificate {
  return new Certificate({
    metadata: meta(identity, "certificate"),
    spec: {
      secretName: tlsSecret(identity),
      issuerRef,
      commonName: identity,
      uris: [spiffeId(identity)],
      dnsNames: serviceDnsNames(identity),
      usages: ["digital signature", "server auth", "client auth"],
      privateKey,
      ...certificateLifetime,
    },
  });
}

/** A server-only certificate with no SPIFFE id: it can never pass for a mesh identity. */
function serverCertificate(identity: string, dnsNames: string[], usages: Certificate["spec"]["usages"] = ["digital signature", "server auth"], extra: Partial<Certificate["spec"]> = {}): Certificate {
  return new Certificate({
    metadata: meta(identity, "certificate"),
    spec: { secretName: tlsSecret(identity), issuerRef, commonName: identity, dnsNames, usages, privateKey, ...certificateLifetime, ...extra },
  });
}

/**
 * The client certificate of CloudNativePG's standbys: common name streaming_replica, from the mesh
 * CA (the cluster's client CA). No SPIFFE id and no DNS name: it is good for that role only.
 */
export const postgresReplicationCertificate = () => new Certificate({
  metadata: meta(postgresReplicationIdentity, "certificate"),
  spec: {
    secretName: tlsSecret(postgresReplicationIdentity),
    secretTemplate: cnpgReload,
    issuerRef,
    commonName: POSTGRES_REPLICATION_ROLE,
    usages: ["digital signature", "client auth"],
    privateKey,
    ...certificateLifetime,
  },
});

export function certificateObjects() {
  return [
    new Issuer({ metadata: meta(SELF_SIGNED, "certificate"), spec: { selfSigned: {} } }),
    new Certificate({
      metadata: meta(CA_ISSUER, "certificate"),
      spec: {
        isCA: true,
        commonName: "ShopMesh CA",
        secretName: CA_SECRET,
        issuerRef: { name: SELF_SIGNED, kind: "Issuer" },
        // Long-lived: every pod trusts it through its ca.crt; a new CA needs a trust bundle overlap.
        duration: "43800h",
        renewBefore: "4380h",
        privateKey: { algorithm: "ECDSA", size: 256 },
      },
    }),
    new Issuer({ metadata: meta(CA_ISSUER, "certificate"), spec: { ca: { secretName: CA_SECRET } } }),
    ...clusterIdentities.filter((identity) => identity !== natsServerIdentity).map(identityCertificate),
    // Clients reach nats-server through its Service.
    serverCertificate(natsServerIdentity, serviceDnsNames(natsChart.release)),
    // Servers of the NATS cluster connect to each other both ways: client and server usages, still no SPIFFE id.
    serverCertificate(natsRoutesIdentity, [`*.${natsHeadless}`, `*.${natsHeadless}.${NAMESPACE}.svc`, `*.${natsHeadless}.${NAMESPACE}.svc.cluster.local`], ["digital signature", "server auth", "client auth"]),
    // CloudNativePG's Services for the primary, the replicas and any instance.
    serverCertificate(postgresServerIdentity, ["rw", "ro", "r"].flatMap((suffix) => serviceDnsNames(`${POSTGRES_CLUSTER}-${suffix}`)), undefined, { secretTemplate: cnpgReload }),
    postgresReplicationCertificate(),
  ];
}
