// REST routes derived from the contracts' google.api.http annotations, so nothing about REST is
// written twice: a newly annotated RPC is reachable without touching the gateway.
//
// Supported, as in grpc-gateway and Vanguard: GET/POST/PUT/PATCH/DELETE patterns (and `custom`),
// path variables `{field}`, `{field=*}`, `{field=**}` and nested `{a.b}`, a `:verb` suffix, `body`
// "*" or one field, remaining fields from the query string (repeated keys, dotted names), and
// additional_bindings.
import { getOption, hasOption, type DescField, type DescMessage, type DescMethod, type DescService, type JsonObject, type JsonValue, type Message } from "@bufbuild/protobuf";
import { ScalarType } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { http } from "../gen/google/api/annotations_pb.js";
import type { HttpRule } from "../gen/google/api/http_pb.js";
import { edgeMethods } from "./access.js";
import { decodeJson } from "./json-input.js";

export interface Route {
  method: DescMethod;
  httpMethod: string;
  /** The template as written in the contract, e.g. /v1/orders/{id}:cancel */
  template: string;
  pattern: RegExp;
  /** Field paths bound by the path, in the order of the pattern's groups. */
  pathFields: string[][];
  /** "*", a field name, or "" (no body). */
  body: string;
}

function compile(template: string): { pattern: RegExp; pathFields: string[][] } {
  const [path, verb] = splitVerb(template);
  const pathFields: string[][] = [];
  const parts = path.split("/").slice(1).map((segment) => {
    const variable = /^\{([a-zA-Z0-9_.]+)(?:=(.+))?\}$/.exec(segment);
    if (!variable) return escape(segment);
    pathFields.push(variable[1]!.split("."));
    const inner = variable[2] ?? "*";
    // A segment variable stops at "/" and at ":" (which starts a custom verb, as in /v1/orders/{id}:cancel).
    return inner === "**" ? "(.+)" : `(${inner.split("/").map((s) => (s === "*" ? "[^/:]+" : escape(s))).join("/")})`;
  });
  return { pattern: new RegExp(`^/${parts.join("/")}${verb ? `:${escape(verb)}` : ""}$`), pathFields };
}

function splitVerb(template: string): [string, string | undefined] {
  const last = template.lastIndexOf("/");
  const colon = template.indexOf(":", last);
  return colon === -1 ? [template, undefined] : [template.slice(0, colon), template.slice(colon + 1)];
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

function routesOf(method: DescMethod, rule: HttpRule): Route[] {
  const routes: Route[] = [];
  const { case: kind, value } = rule.pattern;
  if (kind) {
    const [httpMethod, template] = kind === "custom" ? [value.kind.toUpperCase(), value.path] : [kind.toUpperCase(), value as string];
    routes.push({ method, httpMethod, template, body: rule.body, ...compile(template) });
  }
  for (const extra of rule.additionalBindings) routes.push(...routesOf(method, extra));
  return routes;
}

/** Every REST route of the given services' annotated RPCs that the edge serves. */
export function deriveRoutes(services: readonly DescService[]): Route[] {
  return edgeMethods(services).filter((m) => hasOption(m, http)).flatMap((m) => routesOf(m, getOption(m, http)));
}

export interface Match {
  route: Route;
  /** Values for the path's fields, already percent-decoded. */
  params: Map<string[], string>;
}

/** The route for a request, or why none fits: no path matches (404), or the methods that would (405). */
export function matchRoute(routes: readonly Route[], httpMethod: string, path: string): Match | "not-found" | { allowed: string[] } {
  const allowed: string[] = [];
  for (const route of routes) {
    const m = route.pattern.exec(path);
    if (!m) continue;
    if (route.httpMethod !== httpMethod) {
      allowed.push(route.httpMethod);
      continue;
    }
    return { route, params: new Map(route.pathFields.map((f, i) => [f, decodePathValue(m[i + 1]!)])) };
  }
  return allowed.length ? { allowed } : "not-found";
}

const invalid = (message: string) => new ConnectError(message, Code.InvalidArgument);

function decodePathValue(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw invalid(`the path segment "${raw}" is not valid percent-encoding`);
  }
}

/** Finds a field by proto name or JSON name. */
const fieldOf = (message: DescMessage, name: string): DescField | undefined =>
  message.fields.find((f) => f.name === name || f.jsonName === name);

/** A query-string value as the JSON the field's type expects (a misfit is named when decoding). */
function queryValue(field: DescField, raw: string): JsonValue {
  const scalar = field.fieldKind === "scalar" || field.fieldKind === "list" ? field.scalar : undefined;
  if (scalar === ScalarType.BOOL && (raw === "true" || raw === "false")) return raw === "true";
  return raw; // protobuf JSON accepts numbers, 64-bit integers and enums as strings
}

/** Sets `value` at a dotted field path inside a JSON object being built for `schema`. */
function setPath(target: JsonObject, schema: DescMessage, path: string[], raw: string, repeated: "append" | "set"): void {
  let message = schema;
  let obj = target;
  for (const [i, name] of path.entries()) {
    const field = fieldOf(message, name);
    if (!field) throw invalid(`unknown field "${path.slice(0, i + 1).join(".")}" in ${schema.name}`);
    if (i === path.length - 1) {
      const value = queryValue(field, raw);
      if (field.fieldKind === "list" && repeated === "append") obj[field.jsonName] = [...((obj[field.jsonName] as JsonValue[] | undefined) ?? []), value];
      else obj[field.jsonName] = value;
      return;
    }
    if (field.fieldKind !== "message") throw invalid(`"${path.slice(0, i + 1).join(".")}" has no fields`);
    obj = (obj[field.jsonName] ??= {}) as JsonObject;
    message = field.message;
  }
}

/**
 * Builds the request message from the body (parsed JSON or undefined), the path parameters and
 * the query string, in the protobuf JSON mapping. Unknown fields are rejected with their name.
 */
export function buildRequest(match: Match, body: JsonValue | undefined, query: URLSearchParams): Message {
  const { route } = match;
  const input = route.method.input;
  let json: JsonObject = {};
  if (route.body === "*") {
    if (body !== undefined && (typeof body !== "object" || body === null || Array.isArray(body))) throw invalid("the request body must be a JSON object");
    json = { ...((body as JsonObject | undefined) ?? {}) };
  } else if (route.body) {
    const field = fieldOf(input, route.body);
    if (field && body !== undefined) json[field.jsonName] = body;
  } else if (body !== undefined) {
    throw invalid(`${route.httpMethod} ${route.template} takes no request body`);
  }
  if (route.body !== "*") {
    for (const key of new Set(query.keys())) {
      const values = query.getAll(key);
      values.forEach((v) => setPath(json, input, key.split("."), v, "append"));
    }
  }
  for (const [path, value] of match.params) setPath(json, input, path, value, "set");
  return decodeJson(input, json);
}
