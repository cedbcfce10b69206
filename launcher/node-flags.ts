// Node's flags for the processes `npm start` runs, by measurement (a process per service on
// PostgreSQL, saga, mixed and cached-read load; three runs of each setting).
//
// --max-semi-space-size=2: a young generation of 2 MiB (V8 grows it to 16) keeps an idle process
//   near 90 MiB instead of ~115, at the price of more frequent minor GCs under load.
// --max-old-space-size=256: the heap limit V8 chooses itself in a deployed container, where it
//   sizes the heap from the memory limit (384 MiB gives its minimum, 256 MB). Given gigabytes it
//   chooses 4 GB, and lets the heap grow up to fourfold between full collections (1.3-fold at 256).
//   Peak RSS under load: gateway 161–176 → 102–104 MiB, order 111–118 → 99–102, payment and
//   inventory ~4 less. The price is more GC: CPU per order 0–10 % higher, the gateway's per cached
//   read 292 → 320 µs on average, both within the runs' spread. Live heaps are 25–50 MB.
//   Not for the host of six services, whose live heap is theirs together.
// The host gets a 16 MiB young generation instead: one event loop carries all six services'
//   garbage, and with 2 MiB its minor GCs landed in the saga's latency. At 75 orders/s (two runs
//   each, the same commit): p99 743 and 760 ms with 2 MiB, 455 and 539 with 16; each step's p99
//   (reserve, charge, confirm: the host's alone) fell by 40-50 %; CPU per order the same; its
//   RSS under load 143-146 -> 161-167 MiB, for six services.

/** Every process of one service, and the gateway. */
export const processNodeFlags = ["--max-semi-space-size=2", "--max-old-space-size=256"] as const;

/** The host running several services in one process (launcher/host.ts). */
export const hostNodeFlags = ["--max-semi-space-size=16"] as const;
