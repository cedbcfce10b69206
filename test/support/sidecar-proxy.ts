// A small stand-in for the Envoy sidecar of envoy/<name>.yaml, for testing the runtime's sidecar
// mode in-process (no Envoy binary runs here). It does what the generated config tells Envoy to do,
// with real TLS and real HTTP/2:
// - inbound: terminates mTLS (client certificate from the mesh CA required), allows only the
//   listed callers (RBAC on SPIFFE ids; others get PERMISSION_DENIED as Envoy's RBAC filter
//   answers gRPC), replaces any x-forwarded-client-cert with exactly one element
//   `By=<own id>;Hash=<sha256 of the caller's certificate>;URI=<caller's id>` (SANITIZE_SET with
//   set_current_client_cert_details.uri), and forwards to the app in plaintext h2c;
// - outbound, per upstream: a plaintext h2c listener on loopback that forwards over mTLS as this
//   identity, checking the upstream's SPIFFE id exactly; a connection that fails is retried twice
//   (retry_on connect-failure, num_retries 2), then answered by the proxy itself with UNAVAILABLE
//   and the SIDECAR_REPLY header (local_reply_config, flags UF and URX). A stream reset after the
//   request went out (a replica dying mid-call) is not retried and its reply is not marked, as
//   Envoy's flags for it (UC, UR) are not in the filter. The inbound side marks nothing: the real
//   inbound listener has no local_reply_config.
// Headers, bodies, trailers, grpc-timeout and cancellation pass through unchanged.
import http2 from "node:http2";
import { createHash } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { TLSSocket } from "node:tls";
import { serviceFromSan, spiffeId } from "../../mesh/certs.js";
import { SIDECAR_REPLY, XFCC } from "../../mesh/rpc/transport.js";
import type { TestPki } from "./pki.js";

const { NGHTTP2_CANCEL } = http2.constants;

export interface SidecarCounters {
  /** Streams forwarded to the app or an upstream. */
  forwarded: number;
  /** Connection attempts to upstreams (first tries and retries). */
  connects: number;
  /** Replies the proxy made itself. */
  localReplies: number;
}

export interface TestSidecar {
  /** Where callers reach the app over mTLS (Envoy's inbound listener). */
  inboundAddress: string;
  /** The app's own loopback port (where the inbound side forwards); change it when the app restarts. */
  appPort: number;
  /** Starts an outbound listener for `upstream` at `address`; returns its loopback host:port. */
  outbound(upstream: string, address: string): Promise<string>;
  /** Resets the next `n` inbound calls once their request has arrived, as a replica dying mid-call. */
  dropNextInbound(n: number): void;
  counters: SidecarCounters;
  close(): Promise<void>;
}

const listen = (server: http2.Http2Server | http2.Http2SecureServer) =>
  new Promise<string>((resolve) => server.listen(0, "127.0.0.1", () => resolve(`127.0.0.1:${(server.address() as AddressInfo).port}`)));

function grpcReply(stream: http2.ServerHttp2Stream, code: number, message: string, extra: Record<string, string> = {}) {
  if (stream.destroyed || stream.headersSent) return stream.close(NGHTTP2_CANCEL);
  stream.respond({ ":status": 200, "content-type": "application/grpc", "grpc-status": String(code), "grpc-message": encodeURIComponent(message), ...extra }, { endStream: true });
}

const withoutPseudo = (h: http2.IncomingHttpHeaders) => Object.fromEntries(Object.entries(h).filter(([k]) => !k.startsWith(":")));

/** Relays one stream: request headers and body out, response headers, body and trailers back. */
function relay(down: http2.ServerHttp2Stream, headers: http2.OutgoingHttpHeaders, session: http2.ClientHttp2Session, counters: SidecarCounters) {
  counters.forwarded++;
  const up = session.request(headers, { endStream: false });
  down.pipe(up);
  let trailers: http2.IncomingHttpHeaders | undefined;
  up.on("trailers", (t) => (trailers = t));
  up.on("response", (response) => {
    if (down.destroyed) return;
    if (response["grpc-status"] !== undefined) return down.respond(response, { endStream: true }); // trailers-only
    down.respond(response, { waitForTrailers: true });
    down.on("wantTrailers", () => down.sendTrailers(withoutPseudo(trailers ?? { "grpc-status": "2", "grpc-message": "stream ended without trailers" })));
    up.pipe(down);
  });
  up.on("error", () => {});
  down.on("error", () => {});
  // Cancellation both ways, as a proxy must: the caller left, or the far side reset the stream.
  down.on("close", () => !up.closed && up.close(NGHTTP2_CANCEL));
  up.on("close", () => {
    if (down.closed) return;
    if (!down.headersSent) return grpcReply(down, 14, "upstream reset before headers");
    if (up.rstCode && up.rstCode !== http2.constants.NGHTTP2_NO_ERROR) down.close(up.rstCode);
  });
}

/** One HTTP/2 session to `authority`, made again when it closes; `get` connects (with retries) when needed. */
function sessionTo(authority: string, options: http2.SecureClientSessionOptions | undefined, counters: SidecarCounters) {
  let current: http2.ClientHttp2Session | undefined;
  const connectOnce = () =>
    new Promise<http2.ClientHttp2Session>((resolve, reject) => {
      counters.connects++;
      const session = http2.connect(authority, options);
      session.once("connect", () => resolve(session));
      session.once("error", reject);
      session.on("close", () => current === session && (current = undefined));
    });
  return {
    async get(attempts: number): Promise<http2.ClientHttp2Session> {
      if (current && !current.closed && !current.destroyed) return current;
      for (let attempt = 1; ; attempt++) {
        try {
          current = await connectOnce();
          current.on("error", () => {});
          return current;
        } catch (err) {
          if (attempt >= attempts) throw err;
          await new Promise((r) => setTimeout(r, 25 * attempt));
        }
      }
    },
    close: () => current?.close(),
  };
}

export async function startTestSidecar(pki: TestPki, identity: string, opts: { appPort: number; callers: readonly string[] }): Promise<TestSidecar> {
  const tls = await pki.tls(identity);
  const counters: SidecarCounters = { forwarded: 0, connects: 0, localReplies: 0 };
  const closers: (() => void)[] = [];
  const sessions = new Set<http2.ServerHttp2Session>();
  const track = (s: http2.ServerHttp2Session) => {
    sessions.add(s.on("error", () => {}).on("close", () => sessions.delete(s)));
  };
  let app = sessionTo(`http://127.0.0.1:${opts.appPort}`, undefined, counters);
  let toDrop = 0;

  const inbound = http2.createSecureServer({ ca: tls.ca, cert: tls.cert, key: tls.key, requestCert: true, rejectUnauthorized: true, ALPNProtocols: ["h2"] });
  inbound.on("stream", async (down, headers) => {
    const socket = down.session!.socket as TLSSocket;
    const peer = socket.getPeerCertificate(true);
    const uri = /(?:^|, )URI:(spiffe:\/\/shopmesh\/[^,]+)/.exec(peer.subjectaltname ?? "")?.[1];
    const caller = serviceFromSan(peer.subjectaltname);
    if (!uri || !caller || !opts.callers.includes(caller)) return grpcReply(down, 7, "RBAC: access denied");
    if (toDrop > 0) {
      toDrop--;
      return down.on("error", () => {}).on("end", () => down.close(http2.constants.NGHTTP2_INTERNAL_ERROR)).resume();
    }
    const { [XFCC]: _dropped, ...rest } = headers;
    const hash = createHash("sha256").update(peer.raw).digest("hex");
    try {
      relay(down, { ...rest, [XFCC]: `By=${spiffeId(identity)};Hash=${hash};URI=${uri}` }, await app.get(1), counters);
    } catch {
      counters.localReplies++;
      grpcReply(down, 14, "upstream connect error or disconnect/reset before headers");
    }
  });
  inbound.on("session", track);
  const inboundAddress = await listen(inbound);
  closers.push(() => inbound.close(), () => app.close());

  return {
    inboundAddress,
    get appPort() {
      return opts.appPort;
    },
    set appPort(port: number) {
      app.close();
      opts.appPort = port;
      app = sessionTo(`http://127.0.0.1:${port}`, undefined, counters);
    },
    counters,
    dropNextInbound(n) {
      toDrop += n;
    },
    async outbound(upstream, address) {
      const target = sessionTo(`https://${address}`, {
        ca: tls.ca, cert: tls.cert, key: tls.key, ALPNProtocols: ["h2"], servername: upstream,
        // The exact SPIFFE id of the upstream, as the cluster's match_typed_subject_alt_names says.
        checkServerIdentity: (_host, cert) => (serviceFromSan(cert.subjectaltname) === upstream ? undefined : new Error(`not ${upstream}`)),
      }, counters);
      const listener = http2.createServer();
      listener.on("stream", async (down, headers) => {
        try {
          relay(down, { ...headers }, await target.get(3), counters);
        } catch {
          counters.localReplies++;
          grpcReply(down, 14, "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection failure", { [SIDECAR_REPLY]: "UF,URX" });
        }
      });
      listener.on("session", track);
      closers.push(() => listener.close(), () => target.close());
      return listen(listener);
    },
    async close() {
      closers.forEach((close) => close());
      sessions.forEach((s) => s.destroy());
    },
  };
}
