// Sign-ins under load, against identity as a real process with production password hashing
// (Argon2id, 19 MiB): a burst of logins with short deadlines queues fairly, and no token is ever
// issued for a caller who has already given up. Hashes run at most `concurrency` at a time.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import { IdentityService } from "../../gen/shop/identity/v1/identity_pb.js";
import { ANSWER_MARGIN_MS } from "../../services/identity/handlers.js";
import { hashPassword, verifyPassword } from "../../services/identity/passwords.js";
import { HashingQueue } from "../../services/identity/hashing-queue.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { eventually } from "../support/eventually.js";
import { freePort } from "../support/ports.js";
import { clientFor, rejection, sleep } from "../support/servers.js";

const ADMIN = { email: "admin@shop.test", password: "admin-password" };

describe("a burst of logins with short deadlines", () => {
  let child: ChildProcess;
  let pki: TestPki;
  let stdout = "";
  let address: string;
  const lines = () => stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

  beforeAll(async () => {
    pki = await createTestPki();
    const port = await freePort();
    child = spawn(process.execPath, ["--import", "tsx", "services/identity/main.ts"], {
      env: {
        ...process.env,
        LOG_LEVEL: "info",
        PORT: String(port),
        METRICS_PORT: String(await freePort()),
        CERTS_DIR: await pki.dir(["identity"]),
        DATA_DIR: await mkdtemp(join(tmpdir(), "shopmesh-identity-load-")),
        ADMIN_EMAIL: ADMIN.email,
        ADMIN_PASSWORD: ADMIN.password,
      },
      stdio: ["ignore", "pipe", "inherit"],
    });
    child.stdout!.on("data", (d) => (stdout += d));
    await eventually(() => stdout.includes(`"msg":"serving"`), Boolean, 60_000);
    address = `127.0.0.1:${port}`;
  }, 90_000);
  afterAll(() => {
    child?.kill("SIGTERM");
  });

  it("never issues a token after the caller's deadline, and answers the rest quickly", async () => {
    const client = await clientFor(pki, IdentityService, "identity", [address], { policy: { maxAttempts: 1 } });
    await client.login(ADMIN); // warm: connection up, the hash's pace known
    const loginsBefore = lines().filter((l) => l.msg === "token issued").length;

    const deadlineMs = 1_000;
    // Enough logins for about twice the deadline's worth of hashing on this machine (2 cores hash at once).
    const paced = Date.now();
    await client.login(ADMIN);
    const burst = Math.min(400, Math.max(24, Math.ceil((2 * deadlineMs) / Math.max(1, Date.now() - paced)) * 2));
    const outcomes = await Promise.all(
      Array.from({ length: burst }, async () => {
        const started = Date.now();
        try {
          await client.login(ADMIN, { timeoutMs: deadlineMs });
          return { ok: true, ms: Date.now() - started };
        } catch (err) {
          return { ok: false, code: Code[ConnectError.from(err).code], ms: Date.now() - started };
        }
      }),
    );
    // Every Login the server started has ended (its rpc line is written when the handler returns).
    const logins = () => lines().filter((l) => l.msg === "rpc" && l.method === "shop.identity.v1.IdentityService/Login").length;
    await eventually(logins, (n) => n >= burst + 1, 30_000);
    await sleep(200);

    const answered = outcomes.filter((o) => o.ok).length;
    const issued = lines().filter((l) => l.msg === "token issued").length - loginsBefore;
    const refused = outcomes.filter((o) => !o.ok);
    console.log(
      `${burst} logins, ${deadlineMs} ms deadline: ${answered} answered with a token, ${issued} tokens issued; refused: ${JSON.stringify(
        Object.fromEntries(["ResourceExhausted", "DeadlineExceeded"].map((c) => [c, refused.filter((o) => o.code === c).length])),
      )}, slowest refusal ${Math.max(0, ...refused.map((o) => o.ms))} ms`,
    );
    // The server issues a token only with time left to answer (ANSWER_MARGIN_MS by its own clock)...
    const tokenLines = lines().filter((l) => l.msg === "token issued").slice(-issued);
    expect(tokenLines.every((l) => typeof l.deadline_left_ms === "number" && l.deadline_left_ms >= ANSWER_MARGIN_MS)).toBe(true);
    // ...but one still in flight when the caller's deadline passes can arrive late, on a busy
    // machine more than a few: no server can prevent that. Before the queue and the checks, every
    // one of 24 was issued and none received.
    expect(issued).toBeGreaterThanOrEqual(answered);
    expect(issued - answered).toBeLessThanOrEqual(Math.max(3, Math.ceil(answered / 5)));
    expect(answered).toBeGreaterThan(0);
    expect(refused.every((o) => o.code === "ResourceExhausted" || o.code === "DeadlineExceeded")).toBe(true);
    client.close();
  }, 60_000);

  it("still signs in at once after the burst", async () => {
    const client = await clientFor(pki, IdentityService, "identity", [address]);
    expect((await client.login(ADMIN, { timeoutMs: 5_000 })).accessToken).toBeTruthy();
    expect((await rejection(client.login({ ...ADMIN, password: "wrong-password" }))).code).toBe(Code.Unauthenticated);
    client.close();
  });
});

describe("the hashing queue", () => {
  it("runs at most `concurrency` hashes at once, in arrival order", async () => {
    const queue = new HashingQueue(2);
    const stored = await hashPassword("pw");
    let active = 0;
    let peak = 0;
    const started: number[] = [];
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        queue.run(async () => {
          started.push(i);
          peak = Math.max(peak, ++active);
          try {
            return await verifyPassword("pw", stored);
          } finally {
            active--;
          }
        }),
      ),
    );
    expect(peak).toBe(2);
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(queue.running).toBe(0);
  });

  it("refuses at once a job that cannot finish before its deadline, and drops a waiter whose caller gives up", async () => {
    const queue = new HashingQueue(1);
    const stored = await hashPassword("pw");
    await queue.run(() => verifyPassword("pw", stored)); // the pace is now known
    let busyDone = 0;
    const busy = Array.from({ length: 4 }, () => queue.run(() => verifyPassword("pw", stored)).finally(() => busyDone++));
    const refused = await rejection(queue.run(() => verifyPassword("pw", stored), { deadline: Date.now() + 5 }));
    expect(refused.code).toBe(Code.ResourceExhausted);
    expect(busyDone).toBe(0); // refused at once, not after waiting its turn

    let ran = false;
    const giveUp = new AbortController();
    const waiting = queue.run(async () => (ran = true), { signal: giveUp.signal });
    giveUp.abort(new ConnectError("call cancelled by the client", Code.Canceled));
    expect((await rejection(waiting)).code).toBe(Code.Canceled);
    await Promise.all(busy);
    expect(ran).toBe(false);
    expect(queue.running).toBe(0);
  });
});
