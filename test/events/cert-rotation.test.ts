// A service's NATS connection takes a renewed certificate at its next reconnect, with no restart:
// the client is given the files (as cert-manager's mounted secret or certs/ hold them), not their
// contents read once at start. Proven both ways with a real nats-server restarted under it: a
// certificate NATS refuses put in the files keeps the client out (a copy kept in memory would
// have let it back in), and a renewed one lets it back in.
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connect, type NatsConnection } from "nats";
import { createCa, loadTls } from "../../mesh/certs.js";
import { natsConnectOptions } from "../../mesh/events/nats-config.js";
import { createTestPki, type TestPki } from "../support/pki.js";
import { startNats, type NatsTestServer } from "../support/processes.js";

let pki: TestPki;
let nats: NatsTestServer;
let nc: NatsConnection | undefined;

beforeAll(async () => {
  pki = await createTestPki();
  nats = await startNats(pki);
});
afterAll(async () => {
  await nc?.close();
  await nats?.stop();
});

describe("certificate rotation on the NATS connection", () => {
  it("reads the certificate files again at each reconnect", async () => {
    const dir = await pki.dir(["catalog"]);
    const tls = await loadTls(dir, "catalog");
    expect(tls.paths?.cert).toBe(join(dir, "catalog.crt"));
    nc = await connect({ servers: nats.url, timeout: 5_000, ...natsConnectOptions("catalog", tls), maxReconnectAttempts: -1, reconnectTimeWait: 100 });
    // The connection's status events, counted as they come; a step waits until its event has.
    const seen: string[] = [];
    let wake = () => {};
    void (async () => {
      for await (const s of nc!.status()) (seen.push(String(s.type)), wake());
    })();
    const count = (type: string) => seen.filter((t) => t === type).length;
    const until = async (type: string, n = count(type) + 1) => {
      while (count(type) < n) await new Promise<void>((resolve) => (wake = resolve));
    };

    // A certificate of another CA in the files: after a NATS restart, every reconnect is refused.
    const foreign = await (await createCa("another CA")).issue("catalog");
    await Promise.all([writeFile(join(dir, "catalog.crt"), foreign.cert), writeFile(join(dir, "catalog.key"), foreign.key)]);
    const disconnected = until("disconnect");
    await nats.stop({ keepData: true });
    await disconnected;
    await nats.restart();
    // The server is back: the client reaches it again and again, and is dropped each time for the
    // certificate in the files (a refused connection while it was down shows no "disconnect").
    await until("disconnect", count("disconnect") + 3);
    expect(nc.isClosed()).toBe(false);

    // The renewed certificate arrives (cert-manager rewrites the secret): the next attempt gets in.
    const renewed = await pki.ca.issue("catalog");
    await Promise.all([writeFile(join(dir, "catalog.crt"), renewed.cert), writeFile(join(dir, "catalog.key"), renewed.key)]);
    await until("reconnect");
    await nc.flush(); // a round trip to the server on the new connection
  }, 60_000);
});
