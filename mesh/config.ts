// Configuration from environment variables, checked once at start. A wrong or missing value stops
// the process with one line naming the variable and what it should be.
export class ConfigError extends Error {}

type Parser<T> = (raw: string | undefined, name: string) => T;

const fail = (name: string, expected: string, raw: string | undefined): never => {
  throw new ConfigError(`${name} must be ${expected}${raw === undefined ? " (it is not set)" : `, got "${raw}"`}`);
};

export const env = {
  port: (fallback?: number): Parser<number> => (raw, name) => {
    if (raw === undefined && fallback !== undefined) return fallback;
    const n = Number(raw);
    return raw !== undefined && /^\d+$/.test(raw) && n <= 65535 ? n : fail(name, "a port number 0-65535", raw);
  },
  int: (fallback: number, min = 0): Parser<number> => (raw, name) => {
    if (raw === undefined) return fallback;
    return /^\d+$/.test(raw) && Number(raw) >= min ? Number(raw) : fail(name, `an integer >= ${min}`, raw);
  },
  string: (fallback?: string): Parser<string> => (raw, name) => (raw !== undefined && raw !== "" ? raw : fallback ?? fail(name, "a non-empty string", raw)),
  optional: (): Parser<string | undefined> => (raw) => (raw === "" ? undefined : raw),
  url: (protocols: string[]): Parser<string | undefined> => (raw, name) => {
    if (raw === undefined || raw === "") return undefined;
    try {
      if (protocols.includes(new URL(raw).protocol)) return raw;
    } catch {}
    return fail(name, `a URL starting with ${protocols.map((p) => `${p}//`).join(" or ")}`, raw);
  },
  oneOf: <T extends string>(values: readonly T[], fallback: T): Parser<T> => (raw, name) =>
    raw === undefined ? fallback : (values as readonly string[]).includes(raw) ? (raw as T) : fail(name, `one of ${values.join(", ")}`, raw),
  addresses: (fallback: string): Parser<string[]> => (raw, name) => {
    const list = (raw ?? fallback).split(",").map((s) => s.trim()).filter(Boolean);
    return list.length > 0 && list.every((a) => /^[\w.-]+:\d+$/.test(a)) ? list : fail(name, "a comma-separated list of host:port", raw);
  },
};

/** Reads and checks every variable in `spec`; throws ConfigError listing the first problem. */
export function loadConfig<S extends Record<string, Parser<unknown>>>(
  spec: S,
  source: NodeJS.ProcessEnv = process.env,
): { [K in keyof S]: ReturnType<S[K]> } {
  const out: Record<string, unknown> = {};
  for (const [name, parse] of Object.entries(spec)) out[name] = parse(source[name], name);
  return out as { [K in keyof S]: ReturnType<S[K]> };
}
