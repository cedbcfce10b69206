// The supervisor with real child processes (small node scripts): it follows start-up phases from
// log lines, restarts a crashed process with back-off, gives up on one that crashes at start again
// and again or has a configuration error, reports a stalled start, and drains on stop.
import { afterEach, describe, expect, it, vi } from "vitest";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Supervised, type ProcessSpec } from "../../launcher/supervisor.js";
import type { ProcessState } from "../../launcher/view.js";

/** Waits for the assertion to hold; the bound only stops a broken test (the machine may be busy). */
const eventually = (assertion: () => void, timeout = 60_000) => vi.waitFor(assertion, { timeout, interval: 50 });

const dir = mkdtempSync(join(tmpdir(), "shopmesh-supervisor-"));
const running: Supervised[] = [];
afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.stop()));
});

type Extra = Partial<Omit<ProcessSpec, "members">> & { healthy?: () => Promise<boolean>; members?: string[] };

/** A process running `script` (JavaScript); `healthy` answers the supervisor's health questions. */
function supervise(script: string, { healthy = async () => true, members = ["svc"], ...extra }: Extra = {}) {
  const changes: { state: ProcessState; detail?: string }[] = [];
  const byMember: Record<string, ProcessState[]> = {};
  const n = running.length;
  const p = new Supervised(
    {
      name: members.length === 1 ? members[0]! : "host",
      command: [process.execPath, "-e", script],
      cwd: dir,
      env: { ...process.env, MARKER: join(dir, `marker-${n}`) },
      members: members.map((name) => ({ name, address: "grpcs://127.0.0.1:1", metricsUrl: "http://127.0.0.1:1/metrics", logFile: join(dir, `${name}-${n}.log`), healthy })),
      stallMs: 60_000,
      drainMs: 5_000,
      backoffMs: [50, 100],
      ...extra,
    },
    {
      state: (m, detail) => {
        changes.push({ state: m.state, ...(detail ? { detail } : {}) });
        (byMember[m.name] ??= []).push(m.state);
      },
      line: () => {},
    },
  );
  running.push(p);
  p.start();
  return { p, m: p.members[0]!, changes, byMember };
}

const log = (msg: string) => `console.log(JSON.stringify({ level: 30, msg: ${JSON.stringify(msg)} }));`;
const serveForever = `${log("migrating")} ${log("seeding")} ${log("serving")} process.on("SIGTERM", () => { ${log("stopped")} process.exit(0); }); setInterval(() => {}, 1000);`;

describe("supervisor", () => {
  it("follows the start-up phases from log lines to serving once healthy, and keeps the log", async () => {
    const { p, m, changes } = supervise(serveForever);
    await eventually(() => expect(p.state).toBe("serving"));
    expect(changes.map((c) => c.state)).toEqual(["starting", "migrating", "seeding", "serving"]);
    await p.stop();
    expect(p.state).toBe("stopped");
    expect(readFileSync(m.logFile, "utf8")).toContain('"msg":"stopped"'); // drained through SIGTERM
  });

  it("waits for the health check after the serving line", async () => {
    let answer = false;
    const { p, m } = supervise(serveForever, { healthy: async () => answer });
    await eventually(() => expect(m.recentLogs().some((l) => l.includes('"serving"'))).toBe(true));
    expect(p.state).toBe("seeding");
    answer = true;
    await eventually(() => expect(p.state).toBe("serving"));
  });

  it("asks again when a health question never gets an answer", async () => {
    let asked = 0;
    const { p } = supervise(serveForever, { healthy: () => (++asked === 1 ? new Promise<boolean>(() => {}) : Promise.resolve(true)) });
    await eventually(() => expect(p.state).toBe("serving"));
    expect(asked).toBe(2);
  });

  it("restarts a process that crashes after serving, and counts the restart", async () => {
    // Crashes once (the marker file says it has), then serves.
    const script = `const fs = require("fs"); ${log("serving")} if (!fs.existsSync(process.env.MARKER)) { fs.writeFileSync(process.env.MARKER, ""); setTimeout(() => process.exit(3), 200); } else setInterval(() => {}, 1000);`;
    const { p, changes } = supervise(script);
    await eventually(() => expect(p.restarts).toBe(1));
    await eventually(() => expect(p.state).toBe("serving"));
    expect(changes).toContainEqual({ state: "backing off", detail: "exit code 3; restarting in 0.05 s" });
  });

  it("gives up on a process that crashes at start again and again, with its last lines kept", async () => {
    const { p, m, changes } = supervise(`console.error("cannot open the database: disk full"); process.exit(1);`);
    await eventually(() => expect(p.state).toBe("failed"));
    expect(p.restarts).toBe(4); // five crashes in a row before serving
    expect(changes.at(-1)).toEqual({ state: "failed", detail: "crashed 5 times in a row before serving (exit code 1)" });
    expect(m.recentLogs().at(-1)).toBe("cannot open the database: disk full");
  });

  it("does not restart after a configuration error (exit 78)", async () => {
    const { p, changes } = supervise(`console.error("svc: configuration error: PORT must be a port"); process.exit(78);`);
    await eventually(() => expect(p.state).toBe("failed"));
    expect(p.restarts).toBe(0);
    expect(changes.at(-1)?.detail).toBe("configuration error (exit code 78)");
  });

  it("reports a start that makes no progress (no log line, no CPU time)", async () => {
    const { p, changes } = supervise(`${log("migrating")} setInterval(() => {}, 60_000);`, { stallMs: 1_500 });
    await eventually(() => expect(changes.some((c) => c.detail?.startsWith("stalled"))).toBe(true));
    expect(changes.find((c) => c.detail?.startsWith("stalled"))?.detail).toBe("stalled: no log line and no CPU time for 2 s while migrating");
    expect(p.state).toBe("migrating");
  });

  it("does not call a busy start stalled while it uses CPU", async () => {
    // Silent but computing for ~3 s, then serving.
    const script = `const end = Date.now() + 3000; while (Date.now() < end) {} ${log("serving")} setInterval(() => {}, 1000);`;
    const { p, changes } = supervise(script, { stallMs: 1_500 });
    await eventually(() => expect(p.state).toBe("serving"));
    expect(changes.some((c) => c.detail?.startsWith("stalled"))).toBe(false);
  });

  it("follows each service of a host by the `service` of its lines, and fails the one a configuration error names", async () => {
    const said = (service: string, msg: string) => `console.log(JSON.stringify({ level: 30, service: ${JSON.stringify(service)}, msg: ${JSON.stringify(msg)} }));`;
    const host = `${said("a", "migrating")} ${said("b", "migrating")} ${said("a", "serving")} setTimeout(() => { ${said("b", "serving")} }, 300); setInterval(() => {}, 1000);`;
    const { p, byMember } = supervise(host, { members: ["a", "b"] });
    await eventually(() => expect(p.state).toBe("serving"));
    expect(byMember).toEqual({ a: ["starting", "migrating", "serving"], b: ["starting", "migrating", "serving"] });
    expect(p.members.map((m) => m.recentLogs().map((l) => JSON.parse(l).service))).toEqual([["a", "a"], ["b", "b"]]);

    const broken = supervise(`${said("a", "migrating")} console.error("host: configuration error: b: PORT must be a port"); process.exit(78);`, { members: ["a", "b"] });
    await eventually(() => expect(broken.p.state).toBe("failed"));
    expect(broken.changes.filter((c) => c.state === "failed")).toEqual([
      { state: "failed", detail: "configuration error (exit code 78)" },
      { state: "failed", detail: "stopped with b's configuration error" },
    ]);
    expect(broken.p.members[1]!.state).toBe("failed");
    expect(broken.byMember.b!.at(-1)).toBe("failed");
  });
});

process.on("exit", () => rmSync(dir, { recursive: true, force: true }));
