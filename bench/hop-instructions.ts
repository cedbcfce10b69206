// Instructions per call of each hop case, counted by callgrind: one process runs the case's
// client and server, once with `low` and once with `high` calls after the same warm-up; the
// difference divided by (high - low) cancels start-up, TLS handshakes and compilation. Counts
// hold steady on a shared machine, where wall-clock rates do not.
//   npx tsx bench/hop-instructions.ts [case filter]    (HOP_LOW=300 HOP_HIGH=1300, BENCH_CONCURRENCY=64)
// Profiles stay in .data/bench/callgrind.<case>.<calls>.out for callgrind_annotate.
import { spawn } from "node:child_process";
import { mkdirSync } from "node:fs";

const low = Number(process.env.HOP_LOW ?? 300);
const high = Number(process.env.HOP_HIGH ?? 1300);
const filters = process.argv.length > 2 ? process.argv.slice(2) : ["raw node:http2", "bare grpc-js", "ShopMesh"];
mkdirSync(".data/bench", { recursive: true });

/** Instructions callgrind counted for one run of bench/hop.ts with `calls` calls of one case. */
function count(filter: string, calls: number): Promise<number> {
  const out = `.data/bench/callgrind.${filter.replace(/\W+/g, "-")}.${calls}.out`;
  const args = ["--tool=callgrind", `--callgrind-out-file=${out}`, ...(process.env.HOP_TOGGLE ? ["--instr-atstart=no"] : []), process.execPath, "--import", "tsx", "bench/hop.ts"];
  const child = spawn("valgrind", args, { env: { ...process.env, BENCH_ONLY: filter, HOP_CALLS: String(calls) }, stdio: ["ignore", "inherit", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  return new Promise((resolve, reject) =>
    child.on("close", (code) => {
      const collected = /Collected : (\d+)/.exec(stderr)?.[1];
      if (code !== 0 || !collected) reject(new Error(`callgrind run failed (exit ${code}):\n${stderr.slice(-2000)}`));
      else resolve(Number(collected));
    }),
  );
}

// HOP_TOGGLE=1: one run per case, instrumented only while its HOP_HIGH measured calls run (after
// HOP_WARMUP calls; callgrind_control switches it), so start-up costs no instrumentation time.
if (process.env.HOP_TOGGLE) {
  console.log(`instructions per call, callgrind, ${high} calls instrumented after ${process.env.HOP_WARMUP ?? 500} warm-up calls`);
  for (const filter of filters) console.log(`${filter.padEnd(20)} ${((await count(filter, high)) / high / 1e6).toFixed(3)}M`);
  process.exit(0);
}
console.log(`instructions per call, callgrind, (${high} calls − ${low} calls) / ${high - low}`);
for (const filter of filters) {
  const [a, b] = await Promise.all([count(filter, low), count(filter, high)]);
  console.log(`${filter.padEnd(20)} ${((b - a) / (high - low) / 1e6).toFixed(3)}M`);
}
