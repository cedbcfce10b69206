// Errors at the edge: gRPC codes to HTTP statuses as grpc-gateway and Vanguard map them, with a
// JSON body that says what was wrong: {code, message, details}, field violations included.
import { create, createRegistry, fromBinary, toJson, type JsonObject } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ViolationsSchema } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

export const httpStatus: Record<Code, number> = {
  [Code.Canceled]: 499,
  [Code.Unknown]: 500,
  [Code.InvalidArgument]: 400,
  [Code.DeadlineExceeded]: 504,
  [Code.NotFound]: 404,
  [Code.AlreadyExists]: 409,
  [Code.PermissionDenied]: 403,
  [Code.ResourceExhausted]: 429,
  [Code.FailedPrecondition]: 400,
  [Code.Aborted]: 409,
  [Code.OutOfRange]: 400,
  [Code.Unimplemented]: 501,
  [Code.Internal]: 500,
  [Code.Unavailable]: 503,
  [Code.DataLoss]: 500,
  [Code.Unauthenticated]: 401,
};

/** snake_case code names, as Connect writes them ("invalid_argument"). */
const codeName = (code: Code) => Code[code]!.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();

// Detail types the gateway can render as readable JSON; others are passed as base64.
const detailTypes = createRegistry(ViolationsSchema);

export interface ErrorBody extends JsonObject {
  code: string;
  message: string;
  details: JsonObject[];
}

export function errorBody(error: ConnectError): ErrorBody {
  return {
    code: codeName(error.code),
    message: error.rawMessage,
    details: error.details.map((d): JsonObject => {
      if ("desc" in d) return { "@type": `type.googleapis.com/${d.desc.typeName}`, ...(toJson(d.desc, create(d.desc, d.value)) as JsonObject) };
      const desc = detailTypes.getMessage(d.type);
      if (desc) return { "@type": `type.googleapis.com/${d.type}`, ...(toJson(desc, fromBinary(desc, d.value)) as JsonObject) };
      return { "@type": `type.googleapis.com/${d.type}`, value: Buffer.from(d.value).toString("base64") };
    }),
  };
}

/** Anything not a ConnectError is a bug at the edge: its text (stack, library internals) stays in the logs. */
export const toHttpError = (err: unknown): { status: number; body: ErrorBody } => {
  const error = err instanceof ConnectError ? err : new ConnectError("internal error at the edge", Code.Internal);
  return { status: httpStatus[error.code] ?? 500, body: errorBody(error) };
};
