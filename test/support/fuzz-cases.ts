// Generated hostile requests for the gateway, from the contracts: every REST route (derived as the
// gateway derives them), the Connect and gRPC-Web paths of every public RPC, and malformed HTTP.
// Each case is a function of (seed, case number) only, so any one can be generated again.
import { ScalarType, type DescField, type DescMessage, type DescMethod, type DescService } from "@bufbuild/protobuf";
import type { Route } from "../../gateway/http-rules.js";
import type { Rng } from "./prng.js";

export interface FuzzContext {
  host: string;
  customerToken: string;
  adminToken: string;
  userId: string;
  email: string;
  password: string;
  productIds: string[];
  orderId: string;
  routes: Route[];
  services: DescService[];
  maxBodyBytes: number;
}

/** One request, as bytes, and how to describe it in a failure report. */
export interface FuzzStep {
  bytes: Buffer;
  describe(): string;
}

export interface FuzzCase {
  kind: string;
  steps: FuzzStep[];
}

// ---- hostile values ----
const hostileStrings = [
  "", "\u0000", "x\u0000", "\u0000".repeat(40), "a\u0001\u0002\u001b[31m\u001f\u007f", "\ud800", "\udfff\ud800", "\u202eevil", "\ufeff\uffff",
  "🦄".repeat(200), "x".repeat(5_000), "'; DROP TABLE users; --", "' OR '1'='1", "%00", "../../etc/passwd", "\\", "\"", "${jndi:ldap://x}",
  "<script>alert(1)</script>", "null", "true", "-1", "1e999", " ", "\t\r\n", "\u00a0", "a@b", "@", "𝕏".repeat(300),
];
const hostileNumbers: unknown[] = [0, -1, 1.5, 2147483647, 2147483648, -2147483649, 9007199254740993, 1e308, -1e308, "1", "abc", "", "99999999999999999999999", "-0", "NaN", "Infinity", "0x1f", " 1"];
const wrongTypes: unknown[] = [null, true, false, {}, [], [[]], { a: 1 }, "string", 12, -7.25];
const rawJsonTokens = ["1e400", "-", "01", "NaN", "+1", ".5", "\"\\u0000\"", "\"\\ud800\"", "\"\\x00\"", "\"\u0000\"", "\"\\\"", "tru", "[1,]", "{\"a\":1,}"];
const RAW = "\u0001RAW";
const raw = (token: string) => `${RAW}${token}${RAW}`;

function nest(rng: Rng): unknown {
  const depth = rng.pick([20, 200, 2_000, 20_000]);
  const open = rng.chance(0.5) ? "[" : "{\"a\":";
  const close = open === "[" ? "]" : "}";
  return raw(open.repeat(depth) + "1" + close.repeat(depth));
}

function hostileValue(rng: Rng, field?: DescField): unknown {
  const numeric = field && (field.fieldKind === "scalar" || field.fieldKind === "list") && field.scalar !== undefined && field.scalar !== ScalarType.STRING && field.scalar !== ScalarType.BYTES;
  const r = rng.next();
  if (r < 0.4) return numeric ? rng.pick(hostileNumbers) : rng.pick(hostileStrings);
  if (r < 0.55) return rng.pick(wrongTypes);
  if (r < 0.65) return raw(rng.pick(rawJsonTokens));
  if (r < 0.72) return Array.from({ length: 500 }, (_, i) => (rng.chance(0.5) ? String(i) : "0190a000-0000-7000-8000-000000000001"));
  if (r < 0.77) return nest(rng);
  if (r < 0.85) return rng.pick(["NOPE", 999, -1, "", "order_status_confirmed", 2.5, "ROLE_ADMIN"]); // enum-ish
  if (r < 0.92) return raw(`"${rng.pick(["\\uD800", "\\u0000", "\\u001f", "\\uDFFF"])}x"`);
  return rng.pick(hostileStrings) + rng.pick(hostileStrings);
}

// ---- plausible values, so one hostile field gets past the others' validation ----
function plausibleString(rng: Rng, name: string, message: DescMessage, ctx: FuzzContext): string {
  if (/email/.test(name)) return ctx.email;
  if (/password/.test(name)) return ctx.password;
  if (/country_code/.test(name)) return "DE";
  if (/currency/.test(name)) return "EUR";
  if (/card_number/.test(name)) return "4242424242424242";
  if (name === "token") return `pm_${"a".repeat(32)}`; // well-formed, unknown: the order is cancelled
  if (/token/.test(name)) return "";
  if (name === "user_id" || (name === "id" && /User|Profile/.test(message.typeName))) return ctx.userId;
  if (/order_id/.test(name) || (name === "id" && /Order/.test(message.typeName))) return ctx.orderId;
  if (/(^|_)ids?$/.test(name)) return rng.pick(ctx.productIds);
  if (/url/.test(name)) return "https://example.com/p.png";
  return rng.pick(["Ada", "mug", "kitchen", "fuzz"]);
}

function plausibleValue(rng: Rng, field: DescField, message: DescMessage, ctx: FuzzContext, depth: number): unknown {
  const one = (): unknown => {
    if (field.fieldKind === "message" || (field.fieldKind === "list" && field.listKind === "message")) {
      const m = field.message!;
      if (m.typeName === "google.protobuf.Timestamp") return "2024-05-01T12:00:00Z";
      if (m.typeName.startsWith("google.protobuf.")) return "x";
      return depth > 3 ? {} : plausibleMessage(rng, m, ctx, depth + 1);
    }
    if (field.fieldKind === "enum" || (field.fieldKind === "list" && field.listKind === "enum")) return field.enum!.values.find((v) => v.number !== 0)?.name ?? 0;
    if (field.fieldKind === "map") return { k: "v" };
    switch (field.scalar) {
      case ScalarType.STRING:
        return plausibleString(rng, field.name, message, ctx);
      case ScalarType.BOOL:
        return true;
      case ScalarType.BYTES:
        return "Zm9v";
      case ScalarType.INT64:
      case ScalarType.UINT64:
      case ScalarType.SINT64:
      case ScalarType.FIXED64:
      case ScalarType.SFIXED64:
        return "1450";
      default:
        return 1;
    }
  };
  return field.fieldKind === "list" ? [one()] : one();
}

function plausibleMessage(rng: Rng, message: DescMessage, ctx: FuzzContext, depth = 0, skip: ReadonlySet<string> = new Set()): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of message.fields) {
    if (skip.has(field.name) || rng.chance(0.1)) continue;
    if (field.oneof && Object.keys(out).some((k) => field.oneof!.fields.some((f) => f.jsonName === k))) continue;
    out[field.jsonName] = plausibleValue(rng, field, message, ctx, depth);
  }
  return out;
}

/** Replaces one leaf (or adds an unknown field) somewhere in `obj` with a hostile value. */
function poison(rng: Rng, obj: Record<string, unknown>, message: DescMessage): void {
  let target: Record<string, unknown> | unknown[] = obj;
  let desc: DescMessage | undefined = message;
  for (let depth = 0; depth < 4; depth++) {
    const keys = Object.keys(target);
    if (keys.length === 0 || rng.chance(0.08)) break;
    const key = rng.pick(keys);
    const value = (target as Record<string, unknown>)[key];
    const field: DescField | undefined = desc?.fields.find((f) => f.jsonName === key);
    if (value && typeof value === "object" && rng.chance(0.6)) {
      target = value as Record<string, unknown>;
      desc = Array.isArray(value) ? desc : field?.message;
      if (Array.isArray(value)) desc = field?.message;
      continue;
    }
    (target as Record<string, unknown>)[key] = hostileValue(rng, field);
    return;
  }
  if (!Array.isArray(target)) target[rng.pick(["unknownField", "__proto__", "constructor", "x".repeat(300), "user_id", "userId", "roles"])] = hostileValue(rng);
}

/** JSON text with the RAW markers spliced in as they are (not valid JSON by design). */
const rawMarker = JSON.stringify(RAW).slice(1, -1).replace(/\\/g, "\\\\"); // as it appears inside JSON text
function jsonText(value: unknown): string {
  return JSON.stringify(value).replace(new RegExp(`"${rawMarker}(.*?)${rawMarker}"`, "gs"), (_, token: string) => JSON.parse(`"${token}"`));
}

// ---- HTTP bytes ----
interface Request {
  method: string;
  target: string;
  headers: [string, string][];
  body?: Buffer | string;
  chunked?: boolean;
  version?: string;
}

function render(req: Request, ctx: FuzzContext): FuzzStep {
  const body = req.body === undefined ? undefined : Buffer.isBuffer(req.body) ? req.body : Buffer.from(req.body, "utf8");
  const headers: [string, string][] = [["host", ctx.host], ...req.headers];
  if (body && req.chunked) headers.push(["transfer-encoding", "chunked"]);
  else if (body && !headers.some(([k]) => k.toLowerCase() === "content-length")) headers.push(["content-length", String(body.length)]);
  const head = `${req.method} ${req.target} ${req.version ?? "HTTP/1.1"}\r\n${headers.map(([k, v]) => `${k}: ${v}`).join("\r\n")}\r\n\r\n`;
  let payload = body ?? Buffer.alloc(0);
  if (body && req.chunked) {
    const parts: Buffer[] = [];
    for (let i = 0; i < body.length; i += 64 * 1024) {
      const chunk = body.subarray(i, i + 64 * 1024);
      parts.push(Buffer.from(`${chunk.length.toString(16)}\r\n`), chunk, Buffer.from("\r\n"));
    }
    payload = Buffer.concat([...parts, Buffer.from("0\r\n\r\n")]);
  }
  const bytes = Buffer.concat([Buffer.from(head, "latin1"), payload]);
  return { bytes, describe: () => describeBytes(bytes, ctx) };
}

const rawStep = (text: string | Buffer, ctx: FuzzContext): FuzzStep => {
  const bytes = Buffer.isBuffer(text) ? text : Buffer.from(text, "latin1");
  return { bytes, describe: () => describeBytes(bytes, ctx) };
};

/** A readable, reproducible rendering: tokens named, control bytes escaped, long runs shortened. */
export function describeBytes(bytes: Buffer, ctx: FuzzContext, max = 400): string {
  let text = bytes.subarray(0, 64 * 1024).toString("latin1").replaceAll(ctx.customerToken, "<customer token>").replaceAll(ctx.adminToken, "<admin token>");
  text = text.replace(/(.)\1{15,}/gs, (run, c: string) => `${c}…(×${run.length})`);
  text = JSON.stringify(text).slice(1, -1);
  return text.length > max ? `${text.slice(0, max)}… (${bytes.length} bytes)` : text;
}

function auth(rng: Rng, ctx: FuzzContext): [string, string][] {
  const r = rng.next();
  if (r < 0.65) return [["authorization", `Bearer ${ctx.customerToken}`]];
  if (r < 0.75) return [["authorization", `Bearer ${ctx.adminToken}`]];
  if (r < 0.85) return [];
  const [h, p, s] = ctx.customerToken.split(".");
  const forged = [
    `Bearer ${h}.${p}.${s!.slice(0, -2)}AA`, // signature altered
    `Bearer ${Buffer.from('{"alg":"none","typ":"JWT"}').toString("base64url")}.${p}.`,
    `Bearer ${h}.${Buffer.from(JSON.stringify({ sub: ctx.userId, roles: ["admin"], exp: 9999999999 })).toString("base64url")}.${s}`,
    "Bearer ", "Bearer", "Basic YWRtaW46YWRtaW4=", `Bearer ${"A".repeat(8_000)}`, "Bearer a.b.c", `bearer ${ctx.customerToken}`, `Bearer ${ctx.customerToken} extra`,
    `Bearer ${Buffer.from('{"alg":"HS256","kid":"../../x"}').toString("base64url")}.${p}.${s}`,
  ];
  return [["authorization", rng.pick(forged)]];
}

/** Percent-encodes like encodeURIComponent, and a lone surrogate as the (invalid UTF-8) bytes of one. */
function encode(value: string): string {
  return [...value].map((ch) => (/^[\ud800-\udfff]$/.test(ch) ? "%ED%A0%80" : encodeURIComponent(ch))).join("");
}

/** A path variable's value: a real id, or something hostile, encoded or not. */
function pathValue(rng: Rng, ctx: FuzzContext): string {
  const r = rng.next();
  if (r < 0.3) return rng.pick([...ctx.productIds, ctx.orderId, ctx.userId]);
  if (r < 0.6) return encode(String(rng.pick(hostileStrings)));
  return rng.pick(["%", "%ZZ", "%00", "%C0%80", "%FF%FE", "..", "%2e%2e%2f", "a%2Fb", "x".repeat(3_000), "", "0190a000-0000-7000-8000-00000000000Z", "%u0000", "*", "a b"]);
}

function queryString(rng: Rng, route: Route, ctx: FuzzContext): string {
  const input = route.method.input;
  const pairs: string[] = [];
  const bound = new Set(route.pathFields.map((f) => f[0]));
  for (const field of input.fields) {
    if (bound.has(field.name) || rng.chance(0.5)) continue;
    const value = plausibleValue(rng, field, input, ctx, 3);
    const name = rng.chance(0.5) ? field.name : field.jsonName;
    for (const v of Array.isArray(value) ? value : [value]) if (typeof v !== "object") pairs.push(`${name}=${encode(String(v))}`);
  }
  const r = rng.next();
  if (r < 0.35) pairs.push(`${rng.pick([...input.fields.map((f) => f.jsonName), "unknown", "a.b.c", "lines.quantity", ""])}=${encode(String(hostileValue(rng)).replaceAll(RAW, "").slice(0, 3_000))}`);
  else if (r < 0.5) pairs.push(`${rng.pick(input.fields.map((f) => f.jsonName).concat("x"))}=${rng.pick(["%", "%ZZ", "%00", "%C0%80", "%FF", "a%2", "&&", "=="])}`);
  else if (r < 0.6) for (let i = 0; i < 500; i++) pairs.push(`${rng.pick(input.fields.map((f) => f.name).concat("ids"))}=${i}`);
  else if (r < 0.65) pairs.push("%");
  return pairs.length ? `?${pairs.join("&")}` : "";
}

function restCase(rng: Rng, ctx: FuzzContext): FuzzCase {
  const route = rng.pick(ctx.routes);
  let path = route.template.replace(/\{[^}]+\}/g, () => pathValue(rng, ctx));
  if (!route.body || rng.chance(0.3)) path += queryString(rng, route, ctx);
  const headers = auth(rng, ctx);
  let body: Buffer | string | undefined;
  if (route.body || rng.chance(0.1)) {
    const obj = plausibleMessage(rng, route.method.input, ctx, 0, new Set(route.pathFields.map((f) => f[0]!)));
    if (rng.chance(0.9)) poison(rng, obj, route.method.input);
    body = jsonText(rng.chance(0.05) ? rng.pick(wrongTypes) : obj);
    if (rng.chance(0.05)) body = Buffer.concat([Buffer.from(body.slice(0, -2)), Buffer.from([rng.pick([0xff, 0xc0, 0xed, 0x80]), 0xfe]), Buffer.from(body.slice(-2))]); // invalid UTF-8
    headers.push(["content-type", rng.chance(0.92) ? "application/json" : rng.pick(["text/plain", "application/json; charset=utf-16", "application/x-www-form-urlencoded", "", "application/proto", "multipart/form-data; boundary=x"])]);
  }
  if (rng.chance(0.05)) headers.push(["idempotency-key", String(rng.pick(hostileStrings)).replace(/[\r\n\u0000]/g, "").slice(0, 200) || "k"]);
  const method = rng.chance(0.05) ? rng.pick(["PUT", "DELETE", "PATCH", "GET", "POST", "HEAD", "OPTIONS", "TRACE"]) : route.httpMethod;
  return { kind: `rest ${route.httpMethod} ${route.template}`, steps: [render({ method, target: path, headers, body, chunked: rng.chance(0.1) }, ctx)] };
}

function rpcCase(rng: Rng, ctx: FuzzContext): FuzzCase {
  const service = rng.pick(ctx.services);
  const method: DescMethod = rng.pick(service.methods);
  const path = `/${service.typeName}/${method.name}`;
  const headers = auth(rng, ctx);
  const r = rng.next();
  const garbage = () => Buffer.from(Array.from({ length: rng.int(64) }, () => rng.int(256)));
  const envelope = (flags: number, payload: Buffer) => Buffer.concat([Buffer.from([flags]), Buffer.from([0, 0, 0, 0].map((_, i) => (payload.length >>> (8 * (3 - i))) & 0xff)), payload]);
  let body: Buffer;
  let kind: string;
  if (r < 0.35) {
    const obj = plausibleMessage(rng, method.input, ctx);
    poison(rng, obj, method.input);
    body = Buffer.from(jsonText(obj));
    headers.push(["content-type", method.methodKind === "server_streaming" ? "application/connect+json" : "application/json"]);
    if (method.methodKind === "server_streaming") body = envelope(0, body);
    kind = "connect json";
  } else if (r < 0.55) {
    body = garbage();
    headers.push(["content-type", method.methodKind === "server_streaming" ? "application/connect+proto" : "application/proto"]);
    kind = "connect proto garbage";
  } else if (r < 0.85) {
    const payload = garbage();
    body = rng.chance(0.5) ? envelope(rng.pick([0, 1, 0x80, 0xff]), payload) : Buffer.concat([Buffer.from([0, 0xff, 0xff, 0xff, 0xff]), payload]);
    headers.push(["content-type", rng.pick(["application/grpc-web+proto", "application/grpc-web", "application/grpc-web-text", "application/grpc-web+json"])], ["x-grpc-web", "1"]);
    kind = "grpc-web garbage";
  } else {
    body = garbage();
    headers.push(["content-type", rng.pick(["application/grpc", "application/grpc+proto", "application/connect+json", "text/html", "application/json; charset=latin1"])], ["connect-protocol-version", rng.pick(["1", "2", "x"])]);
    kind = "rpc odd content-type";
  }
  if (rng.chance(0.1)) headers.push([rng.pick(["connect-timeout-ms", "grpc-timeout"]), rng.pick(["0", "-1", "99999999999", "1n", "abc", "1"])]);
  return { kind, steps: [render({ method: rng.chance(0.05) ? "GET" : "POST", target: path, headers, body, chunked: rng.chance(0.1) }, ctx)] };
}

function malformedCase(rng: Rng, ctx: FuzzContext): FuzzCase {
  const h = `host: ${ctx.host}\r\n`;
  const get = (target: string, extra = "") => `GET ${target} HTTP/1.1\r\n${h}${extra}\r\n`;
  const cases: (() => FuzzStep[])[] = [
    () => [rawStep(get(rng.pick(["//[/v1/products", "http://[::1", "http://:99999/", "http://evil.example/v1/products", "*", "v1/products", "/v1/products#x", "/%", "/%00", "/v1/products/%E0%A4%A", "/\u00ff\u00fe", "/v1/products?%", "/" + "a".repeat(12_000)])), ctx)],
    () => [rawStep(`${rng.pick(["GE T", "G\u0000T", "FOO", "get", "CONNECT", "PRI", "\u00ff\u00ff"])} /v1/products HTTP/1.1\r\n${h}\r\n`, ctx)],
    () => [rawStep(`GET /v1/products ${rng.pick(["HTTP/9.9", "HTTP/1.1.1", "HTTP/2.0", "http/1.1", "HTTX/1.1", ""])}\r\n${h}\r\n`, ctx)],
    () => [rawStep(get("/v1/products", rng.pick(["x-a: b\u0000c\r\n", "bad header\r\n", ": empty\r\n", "x-a:\u0001\r\n", " folded: x\r\n", "x-long: " + "a".repeat(20_000) + "\r\n", Array.from({ length: 300 }, (_, i) => `x-h${i}: ${i}\r\n`).join("")])), ctx)],
    () => [rawStep(`POST /v1/auth/login HTTP/1.1\r\n${h}content-type: application/json\r\ncontent-length: 5\r\ncontent-length: ${rng.pick(["6", "5", "-1", "abc"])}\r\n\r\n{"a":1}`, ctx)],
    () => [rawStep(`POST /v1/auth/login HTTP/1.1\r\n${h}content-type: application/json\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n`, ctx)],
    () => [rawStep(`POST /v1/auth/login HTTP/1.1\r\n${h}content-type: application/json\r\ntransfer-encoding: ${rng.pick(["chunked", "gzip, chunked", "chunked, gzip", "identity"])}\r\n\r\n${rng.pick(["zz\r\n{}\r\n0\r\n\r\n", "2\r\n{}\r\n0\r\n\r\n", "ffffffffffffffff\r\n{}", "2;ext\r\n{}\r\n0\r\n\r\n"])}`, ctx)],
    () => [rawStep(`GET /v1/products HTTP/1.0\r\n\r\n`, ctx)],
    () => [rawStep(`GET /v1/products HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n`, ctx)],
  ];
  return { kind: "malformed http", steps: rng.pick(cases)() };
}

function oversizedCase(rng: Rng, ctx: FuzzContext): FuzzCase {
  const big = Buffer.alloc(ctx.maxBodyBytes + 1 + rng.int(4096), "a");
  const target = rng.pick(["/v1/orders", "/v1/auth/login", "/shop.catalog.v1.CatalogService/GetProduct"]);
  const headers: [string, string][] = [["content-type", "application/json"], ["authorization", `Bearer ${ctx.customerToken}`]];
  const chunked = rng.chance(0.6);
  // And then the same connection again: the next request must be answered, not left hanging.
  return {
    kind: `oversized ${chunked ? "chunked" : "content-length"} body, then keep-alive`,
    steps: [render({ method: "POST", target, headers, body: big, chunked }, ctx), render({ method: "GET", target: "/v1/products?pageSize=1", headers: [] }, ctx)],
  };
}

/** After an error answer, the same connection serves the next request. */
function keepAliveCase(rng: Rng, ctx: FuzzContext): FuzzCase {
  const first = restCase(rng, ctx).steps[0]!;
  return { kind: "error, then keep-alive", steps: [first, render({ method: "GET", target: "/v1/products?pageSize=1", headers: [] }, ctx)] };
}

function headerCase(rng: Rng, ctx: FuzzContext): FuzzCase {
  const headers: [string, string][] = [...auth(rng, ctx)];
  headers.push(
    rng.pick<[string, string]>([
      ["x-request-id", rng.pick(["a b", "x".repeat(500), "<script>", "\u00ff"])],
      ["x-forwarded-for", rng.pick(["garbage", "1.1.1.1, 2.2.2.2", "::1", "x".repeat(2_000)])],
      ["x-shop-user-id", ctx.userId],
      ["x-shop-user-roles", "admin"],
      ["content-encoding", "gzip"],
      ["accept", "application/grpc"],
      ["origin", "https://evil.example"],
      ["expect", "100-continue"],
      ["traceparent", rng.pick(["00-zz-zz-01", "x".repeat(1_000)])],
      ["idempotency-key", "k".repeat(5_000)],
      ["connection", "upgrade"],
      ["upgrade", "h2c"],
      ["range", "bytes=0-1"],
    ]),
  );
  const target = rng.pick(["/v1/products", "/v1/orders", `/v1/users/${ctx.userId}`, "/v1/notifications", "/readyz", "/openapi.json"]);
  const body = rng.chance(0.3) ? "{}" : undefined;
  if (body) headers.push(["content-type", "application/json"]);
  return { kind: "odd headers", steps: [render({ method: body ? "POST" : "GET", target, headers, body }, ctx)] };
}

/** Case number `i` of the run seeded `seed`. */
export function fuzzCase(rng: Rng, ctx: FuzzContext): FuzzCase {
  const r = rng.next();
  if (r < 0.55) return restCase(rng, ctx);
  if (r < 0.72) return rpcCase(rng, ctx);
  if (r < 0.82) return malformedCase(rng, ctx);
  if (r < 0.88) return headerCase(rng, ctx);
  if (r < 0.98) return keepAliveCase(rng, ctx);
  return oversizedCase(rng, ctx);
}
