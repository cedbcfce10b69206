// Errors crossing the wire. Handlers throw ConnectError (code, message, typed details); the gRPC
// adapter turns it into a gRPC status with google.rpc.Status details in grpc-status-details-bin,
// and the client turns a gRPC status back into the same ConnectError. Connect's own gRPC trailer
// codec does the encoding, so the wire format is exactly what any gRPC or Connect peer expects.
import { Metadata, type StatusObject, type ServiceError, status } from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";
import { ENVOY_OVERLOADED, SIDECAR_REPLY } from "./transport.js";

const DETAILS_KEY = "grpc-status-details-bin";

// Relayed failures. A handler that rethrows what its own upstream answered (UNAVAILABLE because
// catalog is down) is healthy; its callers' breakers must not count that against it. Errors our
// clients raise are remembered here, and a server sending one marks its status with RELAYED_KEY;
// the client that receives the mark knows the failure is further down.
const RELAYED_KEY = "x-shopmesh-relayed";
const raisedByClient = new WeakSet<ConnectError>();
const relayedByPeer = new WeakSet<ConnectError>();

/** Notes that `error` is what one of our clients answered for an upstream call. */
export function upstreamError(error: ConnectError): ConnectError {
  raisedByClient.add(error);
  return error;
}

/** True when the server that answered `error` was relaying its own upstream's failure. */
export const isRelayed = (error: ConnectError): boolean => relayedByPeer.has(error);

// Failures a sidecar answered itself (transport.ts: SIDECAR_REPLY, ENVOY_OVERLOADED): it retried
// the transport already, or shed the call; the client must not retry them again.
const answeredBySidecar = new WeakSet<ConnectError>();
export const isSidecarReply = (error: ConnectError): boolean => answeredBySidecar.has(error);
const RESERVED = /^(grpc-|:|content-type$|date$|te$|user-agent$)/;

// An error travels in HTTP/2 trailers, and a peer refuses a header list above its limit (node's
// HTTP/2 default is 64 KiB, proxies often take less) by dropping the whole connection with every
// call on it. So one error's trailers stay far below that, whatever a handler puts in the error.
const MAX_MESSAGE_BYTES = 2_048; // grpc-message, percent-encoded (and again inside the details)
const MAX_METADATA_BYTES = 6_144; // details and custom trailers together

/** At most MAX_MESSAGE_BYTES once percent-encoded, cut on a character boundary, marked "…" when cut. */
function boundedMessage(message: string): string {
  if (encodeURIComponent(message).length <= MAX_MESSAGE_BYTES) return message;
  let cut = [...message].slice(0, MAX_MESSAGE_BYTES / 3);
  while (encodeURIComponent(cut.join("") + "…").length > MAX_MESSAGE_BYTES) cut = cut.slice(0, -16);
  return cut.join("") + "…";
}

/** A ConnectError as the status a grpc-js server sends, with bounded trailers. */
export function toGrpcStatus(error: ConnectError): Partial<StatusObject> & { code: status } {
  const message = boundedMessage(error.rawMessage);
  const metadata = new Metadata();
  let budget = MAX_METADATA_BYTES;
  const add = (key: string, value: string | Buffer) => {
    const size = key.length + value.length;
    if (size > budget) return; // dropped rather than sent: the code and message still say what failed
    budget -= size;
    metadata.set(key, value);
  };
  if (raisedByClient.has(error)) add(RELAYED_KEY, "1");
  const bounded = new ConnectError(message, error.code);
  bounded.details.push(...error.details);
  const details = setTrailerStatus(new Headers(), bounded).get(DETAILS_KEY);
  if (details) add(DETAILS_KEY, Buffer.from(details, "base64"));
  for (const [key, value] of error.metadata) {
    if (RESERVED.test(key)) continue; // never let an upstream's status or transport headers through
    add(key, key.endsWith("-bin") ? Buffer.from(value, "base64") : value);
  }
  return { code: error.code as number as status, details: message, metadata };
}

/** A grpc-js client error as a ConnectError with the server's code, message and details. */
export function fromGrpcError(error: ServiceError | Error): ConnectError {
  if (error instanceof ConnectError) return error;
  if (!("code" in error) || typeof error.code !== "number") return ConnectError.from(error, Code.Internal);
  const trailer = new Headers({ "grpc-status": String(error.code), "grpc-message": encodeURIComponent(error.details ?? "") });
  for (const [key, values] of Object.entries(error.metadata?.getMap() ?? {})) {
    trailer.set(key, Buffer.isBuffer(values) ? values.toString("base64") : String(values));
  }
  // Only the status (code, message, typed details) crosses into our error. The upstream's other
  // trailers are its business and must not ride along into our own responses.
  const found = findTrailerError(trailer);
  const result = new ConnectError(found?.rawMessage ?? error.details, found?.code ?? (error.code as number as Code));
  result.details.push(...(found?.details ?? []));
  if (error.metadata?.get(RELAYED_KEY).length) relayedByPeer.add(result);
  if (error.metadata?.get(SIDECAR_REPLY).length || error.metadata?.get(ENVOY_OVERLOADED).length) answeredBySidecar.add(result);
  return result;
}
