// How a process's gRPC traffic is secured, and how it learns who is calling (MESH_TRANSPORT):
// - "mtls" (the default; what `npm start` runs): the process holds its certificate and speaks mTLS
//   itself; a caller is the ShopMesh service its certificate names.
// - "sidecar": an Envoy in the same network namespace speaks mTLS for it (envoy/<name>.yaml). The
//   app speaks plaintext h2c, and only on loopback: inbound calls arrive from Envoy, which checked
//   the caller's certificate and says who it is in one x-forwarded-client-cert (XFCC) element;
//   outbound calls go to Envoy's listener for the upstream on 127.0.0.1:<upstream port>.
// Both modes share the CA and the SPIFFE ids, so sidecar and non-sidecar services call each other.
import * as grpc from "@grpc/grpc-js";
import { X509Certificate } from "node:crypto";
import { isIP } from "node:net";
import { serviceFromSan, spiffeId, type TlsFiles } from "../certs.js";
import { ConfigError } from "../config.js";

export const transportModes = ["mtls", "sidecar"] as const;
export type TransportMode = (typeof transportModes)[number];

/** The header Envoy sets (forward_client_cert_details: SANITIZE_SET) and the app reads in sidecar mode. */
export const XFCC = "x-forwarded-client-cert";

/**
 * Set by the sidecar on a reply it made itself (envoy/<name>.yaml's local_reply_config): the
 * upstream could not be reached even after Envoy's own transport retries, or Envoy shed the call.
 * The app must not retry such a failure again: retries in both layers multiply.
 */
export const SIDECAR_REPLY = "x-mesh-sidecar-reply";
/** Envoy's own mark on a call it shed (circuit breaker or retry budget overflow). */
export const ENVOY_OVERLOADED = "x-envoy-overloaded";

/** A loopback address (127.0.0.0/8, ::1, or an IPv4-mapped loopback), with or without brackets. */
export function isLoopback(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "");
  if (bare === "localhost") return true;
  const v4 = bare.replace(/^::ffff:/i, "");
  if (isIP(v4) === 4) return v4.startsWith("127.");
  return isIP(bare) === 6 && /^(0{0,4}:){7}0{0,3}1$|^::1$/.test(bare);
}

/** Where a sidecar-mode app listens, and where its sidecar's `app` cluster sends (envoy/<name>.yaml). */
export const SIDECAR_APP_HOST = "127.0.0.1";

/**
 * Plaintext is safe only where nothing but the sidecar can connect: a sidecar-mode app listens on
 * loopback, at exactly the address its sidecar forwards to (any other would pass as loopback and
 * leave Envoy nothing to reach).
 */
export function checkListenHost(mode: TransportMode, host: string): void {
  if (mode === "sidecar" && host !== SIDECAR_APP_HOST) throw new ConfigError(`HOST must be ${SIDECAR_APP_HOST} behind a sidecar (MESH_TRANSPORT=sidecar), got "${host}"`);
}

/**
 * A sidecar-mode client speaks plaintext, so only to its own sidecar: an address elsewhere (one
 * left over from a direct-mTLS setup) would send end users' ids in clear to whoever answers.
 */
export function checkUpstreamAddresses(mode: TransportMode, addresses: readonly string[]): void {
  if (mode !== "sidecar") return;
  const elsewhere = addresses.filter((a) => !isLoopback(a.slice(0, a.lastIndexOf(":"))));
  if (elsewhere.length) throw new ConfigError(`behind a sidecar (MESH_TRANSPORT=sidecar) upstream addresses must be the sidecar's loopback listeners, got ${elsewhere.join(", ")}`);
}

/** The host part of grpc-js's getPeer() ("127.0.0.1:5000", "::1:5000", "[::1]:5000"). */
const peerHost = (peer: string) => peer.slice(0, peer.lastIndexOf(":"));

/**
 * Splits an XFCC value into its elements, each a list of [key, value] pairs, kept exactly as sent
 * (nothing trimmed). Values may be double-quoted (Envoy quotes a Subject, which may hold , ; =)
 * with \" and \\ escaped. Returns undefined when the value does not parse: a header we cannot
 * read proves nothing.
 */
export function parseXfcc(value: string): [string, string][][] | undefined {
  const elements: [string, string][][] = [];
  let pairs: [string, string][] = [];
  let i = 0;
  for (;;) {
    const eq = value.indexOf("=", i);
    if (eq < 0) return undefined;
    const key = value.slice(i, eq);
    if (!/^[A-Za-z]+$/.test(key)) return undefined;
    i = eq + 1;
    let text = "";
    if (value[i] === '"') {
      for (i++; i < value.length && value[i] !== '"'; i++) text += value[i] === "\\" ? value[++i] ?? "" : value[i];
      if (value[i++] !== '"') return undefined;
    } else {
      while (i < value.length && !",;".includes(value[i]!)) text += value[i++];
    }
    pairs.push([key, text]);
    const separator = value[i++];
    if (separator === ";") continue;
    elements.push(pairs);
    if (separator === undefined) return elements;
    if (separator !== ",") return undefined;
    pairs = [];
  }
}

/**
 * The caller a sidecar vouches for, or undefined. Trusted only when every rule holds: the TCP
 * peer is on loopback (Envoy, in this network namespace; nobody else can reach a loopback socket),
 * the header came once with exactly one element (SANITIZE_SET replaces whatever the caller sent),
 * its By is this app's own SPIFFE id (the sidecar terminated mTLS for us, not for someone else),
 * and it names one URI, a ShopMesh service.
 */
export function callerFromXfcc(peer: string, values: readonly unknown[], self: string): string | undefined {
  if (!isLoopback(peerHost(peer)) || values.length !== 1 || typeof values[0] !== "string") return undefined;
  const elements = parseXfcc(values[0]);
  if (elements?.length !== 1) return undefined;
  // A key given twice, in any case, is ambiguous: refused.
  const only = (key: string) => {
    const found = elements[0]!.filter(([k]) => k.toLowerCase() === key.toLowerCase());
    return found.length === 1 && found[0]![0] === key ? found[0]![1] : undefined;
  };
  if (only("By") !== spiffeId(self)) return undefined;
  return /^spiffe:\/\/shopmesh\/([a-z0-9-]+)$/.exec(only("URI") ?? "")?.[1];
}

/** The ShopMesh service a certificate names (its URI SAN), e.g. a process's own. */
export function serviceOfCertificate(pem: string): string | undefined {
  return serviceFromSan(new X509Certificate(pem).subjectAltName);
}

/** The part of a gRPC server call the transport reads to identify the caller. */
export interface PeerEvidence {
  getPeer(): string;
  getAuthContext(): { sslPeerCertificate?: { subjectaltname?: string } } | null;
}

/**
 * The HTTP/2 session a server call arrived on. grpc-js hands the first server interceptor its
 * base call, which keeps the stream in a private field; undefined if a release moves it (the
 * caller is then read for every call, correct but slower: mtls.test.ts notices).
 */
const sessionOf = (call: PeerEvidence): object | undefined => (call as { stream?: { session?: object } }).stream?.session;

/**
 * The caller a connection's certificate names, read once per HTTP/2 session: reading a peer
 * certificate costs more than the rest of the identity check. A session's certificate never
 * changes (HTTP/2 forbids TLS renegotiation); a rotated certificate arrives on a new connection,
 * hence a new session and a new read. Weak keys: a closed session's entry goes with it.
 */
const sessionCallers = new WeakMap<object, string | undefined>();
function certificateCaller(call: PeerEvidence): string | undefined {
  const session = sessionOf(call);
  if (session && sessionCallers.has(session)) return sessionCallers.get(session);
  const caller = serviceFromSan(call.getAuthContext()?.sslPeerCertificate?.subjectaltname);
  if (session) sessionCallers.set(session, caller);
  return caller;
}

/** How a server speaks and learns its callers in `mode`. `tls` is the process's own certificate. */
export function serverTransport(mode: TransportMode, tls: TlsFiles) {
  if (mode === "mtls") {
    return {
      credentials: grpc.ServerCredentials.createSsl(
        Buffer.from(tls.ca),
        [{ cert_chain: Buffer.from(tls.cert), private_key: Buffer.from(tls.key) }],
        true, // client certificates required and verified against our CA: mTLS, not TLS
      ),
      /** The certificate proves the caller before any metadata arrives. XFCC is never read. */
      caller: (call: PeerEvidence, _metadata?: grpc.Metadata) => certificateCaller(call),
      needsMetadata: false,
      openHealth: (_call: PeerEvidence) => false,
    };
  }
  const self = serviceOfCertificate(tls.cert);
  if (!self) throw new Error("sidecar mode: this process's certificate names no ShopMesh service, so no XFCC By can match it");
  return {
    credentials: grpc.ServerCredentials.createInsecure(),
    caller: (call: PeerEvidence, metadata?: grpc.Metadata) => (metadata ? callerFromXfcc(call.getPeer(), metadata.get(XFCC), self) : undefined),
    needsMetadata: true,
    /**
     * Health answers loopback callers without XFCC: probes carry no identity (the kubelet's through
     * Envoy's ops port, the image's HEALTHCHECK inside the namespace), and a status is all it tells.
     */
    openHealth: (call: PeerEvidence) => isLoopback(peerHost(call.getPeer())),
  };
}

/** Credentials to call `upstream` in `mode`: mTLS checking it is that service, or plaintext to the local sidecar. */
export function channelCredentials(mode: TransportMode, tls: TlsFiles, upstream: string): grpc.ChannelCredentials {
  if (mode === "sidecar") return grpc.credentials.createInsecure();
  return grpc.credentials.createSsl(Buffer.from(tls.ca), Buffer.from(tls.key), Buffer.from(tls.cert), {
    // The CA proves the certificate is ours; this proves it is the service we meant to call.
    checkServerIdentity: (_host, cert) => {
      const peer = serviceFromSan(cert.subjectaltname);
      return peer === upstream ? undefined : new Error(`expected upstream ${upstream}, certificate names ${peer ?? "no service"}`);
    },
  });
}
