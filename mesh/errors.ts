// Errors crossing the wire. Handlers throw ConnectError (code, message, typed details); the gRPC
// adapter turns it into a gRPC status with google.rpc.Status details in grpc-status-details-bin,
// and the client turns a gRPC status back into the same ConnectError. Connect's own gRPC trailer
// codec does the encoding, so the wire format is exactly what any gRPC or Connect peer expects.
import { Metadata, type StatusObject, type ServiceError, status } from "@grpc/grpc-js";
import { Code, ConnectError } from "@connectrpc/connect";
import { findTrailerError, setTrailerStatus } from "@connectrpc/connect/protocol-grpc";

const DETAILS_KEY = "grpc-status-details-bin";
const RESERVED = /^(grpc-|:|content-type$|date$|te$|user-agent$)/;

/** A ConnectError as the status a grpc-js server sends. */
export function toGrpcStatus(error: ConnectError): Partial<StatusObject> & { code: status } {
  const trailer = setTrailerStatus(new Headers(), error);
  const metadata = new Metadata();
  const details = trailer.get(DETAILS_KEY);
  if (details) metadata.set(DETAILS_KEY, Buffer.from(details, "base64"));
  for (const [key, value] of error.metadata) {
    if (RESERVED.test(key)) continue; // never let an upstream's status or transport headers through
    if (key.endsWith("-bin")) metadata.set(key, Buffer.from(value, "base64"));
    else metadata.set(key, value);
  }
  return { code: error.code as number as status, details: error.rawMessage, metadata };
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
  return result;
}
