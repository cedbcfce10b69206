// An OpenAPI 3.1 document generated from the same contracts and routes the gateway serves:
// paths and parameters from google.api.http, schemas from the messages in the protobuf JSON
// mapping, bearer security on every RPC that needs a token (from the contracts' edge access).
// Nothing is written by hand.
import { ScalarType, type DescEnum, type DescField, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { deriveRoutes, type Route } from "./http-rules.js";
import { EdgeAccess } from "../gen/shop/common/v1/edge_pb.js";
import { edgeAccess } from "./access.js";

type Schema = Record<string, unknown>;

const ref = (typeName: string) => ({ $ref: `#/components/schemas/${typeName}` });

// Well-known types have their own JSON forms.
const WKT: Record<string, Schema> = {
  "google.protobuf.Timestamp": { type: "string", format: "date-time" },
  "google.protobuf.Duration": { type: "string", pattern: "^-?[0-9]+(\\.[0-9]+)?s$" },
  "google.protobuf.FieldMask": { type: "string" },
  "google.protobuf.Struct": { type: "object" },
  "google.protobuf.Value": {},
  "google.protobuf.Empty": { type: "object" },
};

function scalarSchema(type: ScalarType): Schema {
  switch (type) {
    case ScalarType.BOOL:
      return { type: "boolean" };
    case ScalarType.STRING:
      return { type: "string" };
    case ScalarType.BYTES:
      return { type: "string", contentEncoding: "base64" };
    case ScalarType.DOUBLE:
    case ScalarType.FLOAT:
      return { type: "number" };
    case ScalarType.INT64: case ScalarType.SINT64: case ScalarType.SFIXED64:
    case ScalarType.UINT64: case ScalarType.FIXED64:
      return { type: "string", format: "int64", pattern: "^-?[0-9]+$" }; // 64-bit integers are strings in JSON
    default:
      return { type: "integer", format: "int32" };
  }
}

class Schemas {
  readonly all: Record<string, Schema> = {};

  enumSchema(e: DescEnum): Schema {
    this.all[e.typeName] ??= { type: "string", enum: e.values.map((v) => v.name) };
    return ref(e.typeName);
  }

  message(m: DescMessage): Schema {
    if (WKT[m.typeName]) return WKT[m.typeName]!;
    if (!this.all[m.typeName]) {
      const properties: Record<string, Schema> = {};
      this.all[m.typeName] = { type: "object", properties, additionalProperties: false };
      for (const f of m.fields) properties[f.jsonName] = this.field(f);
    }
    return ref(m.typeName);
  }

  private single(f: { scalar?: ScalarType; message?: DescMessage; enum?: DescEnum }): Schema {
    if (f.message) return this.message(f.message);
    if (f.enum) return this.enumSchema(f.enum);
    return scalarSchema(f.scalar!);
  }

  field(f: DescField): Schema {
    switch (f.fieldKind) {
      case "list":
        return { type: "array", items: this.single({ scalar: f.scalar, message: f.message, enum: f.enum }) };
      case "map":
        return { type: "object", additionalProperties: this.single({ scalar: f.mapKind === "scalar" ? f.scalar : undefined, message: f.message, enum: f.enum }) };
      case "message":
        return this.message(f.message);
      case "enum":
        return this.enumSchema(f.enum);
      default:
        return scalarSchema(f.scalar);
    }
  }
}

const errorSchema: Schema = {
  type: "object",
  required: ["code", "message"],
  properties: {
    code: { type: "string", description: "The gRPC status code in snake_case, e.g. invalid_argument." },
    message: { type: "string" },
    details: { type: "array", items: { type: "object", properties: { "@type": { type: "string" } } } },
  },
};

function operation(route: Route, schemas: Schemas): Schema {
  const { method } = route;
  const pathNames = new Set(route.pathFields.map((f) => f[0]));
  const parameters: Schema[] = route.pathFields.map((path) => {
    let message = method.input;
    let field: DescField | undefined;
    for (const name of path) {
      field = message.fields.find((f) => f.name === name)!;
      if (field.fieldKind === "message") message = field.message;
    }
    return { name: path.join("."), in: "path", required: true, schema: schemas.field(field!) };
  });
  if (!route.body || route.body !== "*") {
    for (const f of method.input.fields) {
      if (pathNames.has(f.name) || f.name === route.body || f.fieldKind === "message" || f.fieldKind === "map") continue;
      parameters.push({ name: f.jsonName, in: "query", required: false, schema: schemas.field(f), ...(f.fieldKind === "list" ? { style: "form", explode: true } : {}) });
    }
  }
  const op: Schema = {
    operationId: `${method.parent.name}_${method.name}`,
    summary: `${method.parent.name}.${method.name}`,
    tags: [method.parent.name],
    parameters,
    responses: {
      "200": {
        description: "OK",
        content:
          method.methodKind === "server_streaming"
            ? { "text/event-stream": { schema: { type: "string", description: `Server-Sent Events; each data line is a ${method.output.name} as JSON.` } } }
            : { "application/json": { schema: schemas.message(method.output) } },
      },
      default: { description: "An error: the HTTP status follows the gRPC code.", content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } } },
    },
  };
  if (route.body === "*") op.requestBody = { required: false, content: { "application/json": { schema: schemas.message(method.input) } } };
  else if (route.body) {
    const field = method.input.fields.find((f) => f.name === route.body)!;
    op.requestBody = { required: false, content: { "application/json": { schema: schemas.field(field) } } };
  }
  const access = edgeAccess(method);
  if (access !== EdgeAccess.PUBLIC) op.security = [{ bearerAuth: [] }];
  if (access === EdgeAccess.ADMIN) op.description = "Admins only: other callers get 403.";
  return op;
}

export function openapiDocument(services: readonly DescService[]): object {
  const schemas = new Schemas();
  const paths: Record<string, Record<string, Schema>> = {};
  for (const route of deriveRoutes(services)) {
    (paths[route.template] ??= {})[route.httpMethod.toLowerCase()] = operation(route, schemas);
  }
  return {
    openapi: "3.1.0",
    info: { title: "ShopMesh API", version: "v1", description: "Generated from the protobuf contracts (google.api.http annotations)." },
    paths,
    components: {
      schemas: { ...schemas.all, Error: errorSchema },
      securitySchemes: { bearerAuth: { type: "http", scheme: "bearer", bearerFormat: "JWT" } },
    },
  };
}
