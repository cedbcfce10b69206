import { describe, expect, it } from "vitest";
import { ConfigError, env, loadConfig } from "../../mesh/config.js";

const spec = {
  PORT: env.port(50051),
  DATABASE_URL: env.url(["postgres:", "postgresql:"]),
  RETRIES: env.int(3, 1),
  MODE: env.oneOf(["a", "b"] as const, "a"),
  UPSTREAMS: env.addresses("127.0.0.1:1"),
};

describe("config", () => {
  it("fills defaults and parses what is set", () => {
    expect(loadConfig(spec, {})).toEqual({ PORT: 50051, DATABASE_URL: undefined, RETRIES: 3, MODE: "a", UPSTREAMS: ["127.0.0.1:1"] });
    expect(loadConfig(spec, { PORT: "0", DATABASE_URL: "postgres://u@h/db", RETRIES: "5", MODE: "b", UPSTREAMS: "a:1, b:2" })).toEqual({
      PORT: 0, DATABASE_URL: "postgres://u@h/db", RETRIES: 5, MODE: "b", UPSTREAMS: ["a:1", "b:2"],
    });
  });

  it.each([
    [{ PORT: "70000" }, 'PORT must be a port number 0-65535, got "70000"'],
    [{ DATABASE_URL: "mysql://x" }, 'DATABASE_URL must be a URL starting with postgres:// or postgresql://, got "mysql://x"'],
    [{ RETRIES: "0" }, 'RETRIES must be an integer >= 1, got "0"'],
    [{ MODE: "c" }, 'MODE must be one of a, b, got "c"'],
    [{ UPSTREAMS: "nohost" }, 'UPSTREAMS must be a comma-separated list of host:port, got "nohost"'],
  ])("names the variable and what it expects: %j", (source, message) => {
    expect(() => loadConfig(spec, source)).toThrow(new ConfigError(message));
  });

  it("says when a required value is missing", () => {
    expect(() => loadConfig({ SECRET: env.string() }, {})).toThrow("SECRET must be a non-empty string (it is not set)");
  });
});
