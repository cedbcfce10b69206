// `npm run bench:saga`: the saga rows of `npm run bench` alone (bench/all.ts): orders through the
// gateway at fixed rates with every process apart, then the capacity; raw JetStream at the same
// rates as the baseline. BENCH_RATE=40 (the old single rate) means BENCH_SAGA_RATES=40.
process.env.BENCH_ROWS ??= "saga";
if (process.env.BENCH_RATE) process.env.BENCH_SAGA_RATES ??= process.env.BENCH_RATE;
await import("./all.js");
