// NUL (U+0000) in request strings. Protobuf allows it, PostgreSQL's text and jsonb do not, and no
// name, address or search term needs it: the validation interceptor refuses it in every string
// of every request, nested and repeated fields and map keys included, with violations shaped
// like protovalidate's own.
import { ScalarType, type DescMessage, type Message } from "@bufbuild/protobuf";
import { buildPath, reflect, type PathBuilder, type ReflectMessage } from "@bufbuild/protobuf/reflect";
import { Violation } from "@bufbuild/protovalidate";

const RULE_ID = "string.no_nul";
const hasNul = (value: unknown) => typeof value === "string" && value.includes("\u0000");
const violation = (path: PathBuilder, forKey = false) => new Violation("must not contain NUL (U+0000)", RULE_ID, path.toPath(), [], forKey);

/**
 * Whether any string in a message holds a NUL, map keys included: a first look at the plain object
 * (lists are arrays, maps records, bytes typed arrays), since naming the violations by reflection
 * costs more per request than the check itself, and nearly every request has none.
 */
function anyNul(value: unknown): boolean {
  if (typeof value === "string") return value.includes("\u0000");
  if (typeof value !== "object" || value === null || ArrayBuffer.isView(value)) return false;
  if (Array.isArray(value)) return value.some(anyNul);
  for (const key in value) if (key.includes("\u0000") || anyNul((value as Record<string, unknown>)[key])) return true;
  return false;
}

/** One violation per string in `message` that holds a NUL, named by its path (a.b[0], m["k"]). */
export function nulViolations(schema: DescMessage, message: Message): Violation[] {
  if (!anyNul(message)) return [];
  const found: Violation[] = [];
  const visit = (m: ReflectMessage, path: PathBuilder) => {
    for (const f of m.fields) {
      if (!m.isSet(f)) continue;
      const at = () => path.clone().field(f);
      if (f.fieldKind === "scalar") {
        if (hasNul(m.get(f))) found.push(violation(at()));
      } else if (f.fieldKind === "message") {
        visit(m.get(f), at());
      } else if (f.fieldKind === "list") {
        let i = 0;
        for (const item of m.get(f)) {
          if (f.listKind === "message") visit(item as ReflectMessage, at().list(i));
          else if (hasNul(item)) found.push(violation(at().list(i)));
          i++;
        }
      } else if (f.fieldKind === "map") {
        for (const [key, value] of m.get(f)) {
          const entry = () => at().map(key as string | number | bigint | boolean);
          if (hasNul(key)) found.push(violation(entry(), true));
          if (f.mapKind === "message") visit(value as ReflectMessage, entry());
          else if (f.mapKind === "scalar" && f.scalar === ScalarType.STRING && hasNul(value)) found.push(violation(entry()));
        }
      }
    }
  };
  visit(reflect(schema, message), buildPath(schema));
  return found;
}
