// `npm run dlq -- list` shows the dead letters; `npm run dlq -- replay <seq>… | --all` publishes
// them again on their original subjects (after the bug that sent them there is fixed).
// It connects as the operator: the "client" certificate in CERTS_DIR, which NATS gives every right.
import { join } from "node:path";
import { connect } from "nats";
import { loadTls } from "../mesh/certs.js";
import { listDeadLetters, replayDeadLetters } from "../mesh/events/dead-letters.js";
import { natsConnectOptions, natsOperator } from "../mesh/events/nats-config.js";
import { projectRoot } from "../mesh/service.js";

const [command, ...args] = process.argv.slice(2);
const tls = await loadTls(process.env.CERTS_DIR ?? join(projectRoot, "certs"), natsOperator);
const nc = await connect({ servers: process.env.NATS_URL ?? "tls://127.0.0.1:4222", timeout: 5_000, ...natsConnectOptions(natsOperator, tls) });
const jsm = await nc.jetstreamManager();
try {
  if (command === "list") {
    const letters = await listDeadLetters(jsm);
    if (letters.length === 0) console.log("no dead letters");
    for (const l of letters) {
      console.log(`#${l.seq}  ${l.time.toISOString()}  ${l.consumer}  ${l.type}  id=${l.eventId}  deliveries=${l.deliveries}\n      ${l.reason}`);
    }
  } else if (command === "replay" && args.length > 0) {
    const seqs = args[0] === "--all" ? (await listDeadLetters(jsm)).map((l) => l.seq) : args.map(Number);
    if (seqs.some((s) => !Number.isInteger(s) || s <= 0)) throw new Error(`replay takes dead-letter numbers from \`list\` or --all, got ${args.join(" ")}`);
    console.log(`replayed ${await replayDeadLetters(nc.jetstream(), jsm, seqs)} dead letter(s)`);
  } else {
    console.error("usage: npm run dlq -- list | replay <seq>... | replay --all");
    process.exitCode = 2;
  }
} catch (err) {
  console.error(`dlq: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  await nc.close();
}
