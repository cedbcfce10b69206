// Request bodies at the edge, read once for every protocol (REST, Connect, gRPC-Web), bounded in
// size and in patience. Node's HTTP parser does not expose a chunk's announced size, so a body is
// refused as soon as the bytes received pass the limit; a body that stops arriving (a chunk
// announced as 2^64-1 bytes, a client that went quiet) is refused when no byte came for a while.
// Both refusals leave the rest of the body unread: the server answers and closes the connection.
import type { IncomingMessage } from "node:http";

/** A refusal answered at the HTTP level, before any protocol read the body, closing the connection. */
export class BodyRefused extends Error {
  constructor(
    readonly status: 408 | 413,
    readonly code: "deadline_exceeded" | "resource_exhausted",
    message: string,
    /** The body as far as it was read, for discardRest. */
    readonly rest?: AsyncIterator<Buffer>,
  ) {
    super(message);
  }
}

export interface BodyLimits {
  maxBytes: number;
  /** The longest wait for the next bytes of a body that has not ended. */
  idleTimeoutMs: number;
}

export const tooLarge = (limits: BodyLimits, rest?: AsyncIterator<Buffer>) => new BodyRefused(413, "resource_exhausted", `the request body exceeds ${limits.maxBytes} bytes`, rest);

const EMPTY = Buffer.alloc(0);

/** The next chunk of a body, or "idle" when none comes within `idleMs`. */
async function nextChunk(body: AsyncIterator<Buffer>, idleMs: number): Promise<IteratorResult<Buffer> | "idle"> {
  let timer: NodeJS.Timeout | undefined;
  const idle = new Promise<"idle">((resolve) => (timer = setTimeout(() => resolve("idle"), idleMs)));
  return Promise.race([body.next(), idle]).finally(() => clearTimeout(timer));
}

/** The whole body, or BodyRefused (413 past the limit, 408 when it stops arriving). */
export async function readBody(req: IncomingMessage, limits: BodyLimits): Promise<Buffer> {
  // Neither Content-Length nor Transfer-Encoding: HTTP/1.1 framing says there is no body (RFC 9112
  // §6.3), so there is nothing to wait for (most GETs; waiting costs a timer and a stream iterator).
  if (req.headers["transfer-encoding"] === undefined && (req.headers["content-length"] ?? "0") === "0") return EMPTY;
  const chunks: Buffer[] = [];
  let size = 0;
  const body = req[Symbol.asyncIterator]();
  for (;;) {
    const next = await nextChunk(body, limits.idleTimeoutMs);
    if (next === "idle") throw new BodyRefused(408, "deadline_exceeded", `the request body stopped arriving: nothing for ${limits.idleTimeoutMs} ms`, body);
    if (next.done) return Buffer.concat(chunks, size);
    size += next.value.length;
    if (size > limits.maxBytes) throw tooLarge(limits, body);
    chunks.push(next.value);
  }
}

/**
 * Reads and drops what a client still sends of a refused body, until it ends, pauses for a
 * second, or `lingerMs` have passed. A socket closed with unread bytes is reset, and a client
 * still writing its body then loses the answer it was sent (hence nginx's "lingering close").
 */
export async function discardRest(req: IncomingMessage, refusal: BodyRefused, lingerMs: number): Promise<void> {
  const body = refusal.rest ?? req[Symbol.asyncIterator]();
  const until = Date.now() + lingerMs;
  try {
    for (let left = lingerMs; left > 0; left = until - Date.now()) {
      const next = await nextChunk(body, Math.min(1_000, left));
      if (next === "idle" || next.done) return;
    }
  } catch {
    // the client went away: nothing left to protect
  }
}
