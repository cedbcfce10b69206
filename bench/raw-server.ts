// The baseline of the edge rows: a raw node:http server in a process of its own, answering each
// path with the very bytes the gateway answered it with (the parent sends path → body over IPC,
// and may send a new map before each row). It answers { port } once listening, and { ok } to each
// new map.
import { createServer } from "node:http";

let bodies = new Map<string, Buffer>();
const server = createServer((req, res) => {
  const body = bodies.get(req.url ?? "");
  if (!body) return void res.writeHead(404).end();
  res.writeHead(200, { "content-type": "application/json; charset=utf-8", "content-length": body.length }).end(body);
});
server.listen(0, "127.0.0.1", () => process.send!({ port: (server.address() as { port: number }).port }));
process.on("message", (map: Record<string, string>) => {
  bodies = new Map(Object.entries(map).map(([path, body]) => [path, Buffer.from(body)]));
  process.send!({ ok: true });
});
process.on("disconnect", () => process.exit(0));
