// Request JSON into a protobuf message, with errors that name the field the way validation errors
// do. protobuf-es says which message type failed ("cannot decode message shop.common.v1.Money
// from JSON: true"); a caller needs the path in what they sent ("lines[1].quantity") and what
// belongs there. On failure the JSON is walked field by field to find the first field that does
// not decode; the answer is INVALID_ARGUMENT with a buf.validate.Violations detail, as from the
// services' validation.
import { create, fromJson, ScalarType, type DescField, type DescMessage, type JsonObject, type JsonValue, type MessageShape } from "@bufbuild/protobuf";
import { isWrapperDesc } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import { FieldPathElementSchema, ViolationsSchema, type FieldPathElement } from "@bufbuild/protovalidate/gen/buf/validate/validate_pb.js";

export interface DecodeOptions {
  /** Connect ignores fields it does not know (forward compatibility); REST refuses them. */
  ignoreUnknownFields?: boolean;
}

/** `json` as a message of `schema`, or INVALID_ARGUMENT naming the first field that does not fit. */
export function decodeJson<Desc extends DescMessage>(schema: Desc, json: JsonValue, opts: DecodeOptions = {}): MessageShape<Desc> {
  try {
    return fromJson(schema, json, opts);
  } catch {
    throw misfit(schema, json, opts);
  }
}

interface Step {
  /** As the caller wrote it: a key, "[2]" or "[\"k\"]". */
  text: string;
  element?: FieldPathElement;
}

interface Misfit {
  path: Step[];
  problem: string;
}

function misfit(schema: DescMessage, json: JsonValue, opts: DecodeOptions): ConnectError {
  const found = locate(schema, json, [], opts) ?? { path: [], problem: `does not fit ${describe(schema)}` };
  const path = found.path.map((s, i) => (i === 0 || s.text.startsWith("[") ? s.text : `.${s.text}`)).join("");
  const message = path ? `${path}: ${found.problem}` : `the request ${found.problem}`;
  const violations = create(ViolationsSchema, {
    violations: [{ message: found.problem, field: { elements: found.path.flatMap((s) => (s.element ? [s.element] : [])) } }],
  });
  return new ConnectError(message, Code.InvalidArgument, undefined, [{ desc: ViolationsSchema, value: violations }]);
}

const isObject = (v: JsonValue): v is JsonObject => typeof v === "object" && v !== null && !Array.isArray(v);

/** Messages with a JSON form of their own (Timestamp, wrappers, Struct…): not walked into. */
const opaque = (m: DescMessage) => m.typeName.startsWith("google.protobuf.");

function fieldStep(field: DescField, key: string, subscript?: FieldPathElement["subscript"]): Step {
  return { text: key, element: create(FieldPathElementSchema, { fieldNumber: field.number, fieldName: field.name, fieldType: field.proto.type, subscript }) };
}

/** The first field of `json` that does not decode as part of `schema`, if one alone does not. */
function locate(schema: DescMessage, json: JsonValue, path: Step[], opts: DecodeOptions): Misfit | undefined {
  if (!isObject(json)) return { path, problem: `expected ${describe(schema)}, got ${shown(json)}` };
  const seenOneofs = new Map<string, string>();
  for (const [key, value] of Object.entries(json)) {
    const field = schema.fields.find((f) => f.jsonName === key || f.name === key);
    if (!field) {
      if (opts.ignoreUnknownFields) continue;
      return { path: [...path, { text: key }], problem: "unknown field" };
    }
    if (field.oneof && value !== null) {
      const other = seenOneofs.get(field.oneof.name);
      if (other) return { path: [...path, fieldStep(field, key)], problem: `only one of ${other} and ${key} may be set` };
      seenOneofs.set(field.oneof.name, key);
    }
    if (fits(schema, { [key]: value }, opts)) continue;
    const here = [...path, fieldStep(field, key)];
    if (field.fieldKind === "list" && Array.isArray(value)) {
      for (const [i, item] of value.entries()) {
        if (fits(schema, { [key]: [item] }, opts)) continue;
        const at = [...path, fieldStep(field, key, { case: "index", value: BigInt(i) }), { text: `[${i}]` }];
        return (field.message && !opaque(field.message) && isObject(item) && locate(field.message, item, at, opts)) || { path: at, problem: `expected ${expected(field)}, got ${shown(item)}` };
      }
    }
    if (field.fieldKind === "map" && isObject(value)) {
      for (const [k, item] of Object.entries(value)) {
        if (fits(schema, { [key]: { [k]: item } }, opts)) continue;
        const at = [...path, fieldStep(field, key, { case: "stringKey", value: k }), { text: `[${JSON.stringify(k)}]` }];
        return (field.message && !opaque(field.message) && isObject(item) && locate(field.message, item, at, opts)) || { path: at, problem: `expected ${expected(field)}, got ${shown(item)}` };
      }
    }
    if (field.fieldKind === "message" && !opaque(field.message) && isObject(value)) {
      const inner = locate(field.message, value, here, opts);
      if (inner) return inner;
    }
    const whole = field.fieldKind === "list" ? "an array" : field.fieldKind === "map" ? "an object" : expected(field);
    return { path: here, problem: `expected ${whole}, got ${shown(value)}` };
  }
  return undefined;
}

function fits(schema: DescMessage, json: JsonObject, opts: DecodeOptions): boolean {
  try {
    fromJson(schema, json, opts);
    return true;
  } catch {
    return false;
  }
}

/** What one value of the field (one element of a list, one value of a map) must look like. */
function expected(field: DescField): string {
  if (field.message) return describe(field.message);
  if (field.enum) return `one of ${field.enum.values.map((v) => v.name).join(", ")}`;
  return scalarShape(field.scalar!);
}

function describe(m: DescMessage): string {
  if (isWrapperDesc(m)) return `${scalarShape(m.fields[0]!.scalar!)} or null`;
  switch (m.typeName) {
    case "google.protobuf.Timestamp": return 'an RFC 3339 timestamp such as "2024-05-01T12:00:00Z"';
    case "google.protobuf.Duration": return 'a duration such as "1.5s"';
    case "google.protobuf.FieldMask": return "a comma-separated list of field names";
    case "google.protobuf.Value": return "a JSON value";
    case "google.protobuf.ListValue": return "an array";
    default: return "an object";
  }
}

function scalarShape(type: ScalarType): string {
  switch (type) {
    case ScalarType.STRING: return "a string";
    case ScalarType.BOOL: return "true or false";
    case ScalarType.BYTES: return "base64-encoded bytes";
    case ScalarType.DOUBLE: case ScalarType.FLOAT: return "a number";
    case ScalarType.INT32: case ScalarType.SINT32: case ScalarType.SFIXED32: return "a 32-bit integer";
    case ScalarType.UINT32: case ScalarType.FIXED32: return "an unsigned 32-bit integer";
    case ScalarType.UINT64: case ScalarType.FIXED64: return "an unsigned 64-bit integer (a number or a string of digits)";
    default: return "a 64-bit integer (a number or a string of digits)";
  }
}

/** A short rendering of what the caller sent (their own input, cut short). */
function shown(v: JsonValue): string {
  if (Array.isArray(v)) return "an array";
  if (isObject(v)) return "an object";
  const text = JSON.stringify(v);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}
