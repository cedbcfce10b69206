// `npm run bench:edge`: the edge rows of `npm run bench` alone (bench/all.ts): GET /v1/products/{id}
// and an authenticated GET /v1/orders/{id} through the gateway, closed loop, against a raw
// node:http server answering the same bytes, every process apart.
process.env.BENCH_ROWS ??= "products,orders";
await import("./all.js");
